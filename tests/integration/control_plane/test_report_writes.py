"""Agent reports and console tails on real etcd, counted in round trips:
a report is one CAS txn with no read first (a concurrent writer costs one
failed txn and no lost field); console tails are flushed in shared txns."""

from __future__ import annotations

import dataclasses

import pytest

from control_plane.domain.agent import AgentPhase, AgentReport
from control_plane.store import Store
from tests.harness.store import cp_etcd, eventually, root, store, store_factory

__all__ = ["cp_etcd", "root", "store", "store_factory"]
pytestmark = pytest.mark.asyncio(loop_scope="session")


def _txns(store: Store) -> int:
    return store.stats.round_trips["Txn"] + store.stats.round_trips["Range"]


async def test_a_report_is_one_txn_and_keeps_another_writers_fields(store: Store) -> None:
    before = _txns(store)
    mine = await store.reports.merge(
        "rh1",
        lambda r: dataclasses.replace(r, instance="tenants/t/instances/i", generation=1),
    )
    assert _txns(store) == before + 1
    mine = await store.reports.merge(
        "rh1", lambda r: dataclasses.replace(r, instance_phase=AgentPhase.STARTING), known=mine
    )
    assert _txns(store) == before + 2
    # another writer (a second stream of the host) reports the wipe meanwhile
    other = await store.reports.get("rh1")
    assert other is not None
    await store.reports.put(dataclasses.replace(other, wiped_epoch=3))
    before = _txns(store)
    mine = await store.reports.merge(
        "rh1", lambda r: dataclasses.replace(r, instance_phase=AgentPhase.RUNNING), known=mine
    )
    assert _txns(store) == before + 2  # one failed CAS that returned the stored report
    got = await store.reports.get("rh1")
    assert got is not None
    assert (got.instance_phase, got.wiped_epoch, got.generation) == (AgentPhase.RUNNING, 3, 1)
    assert got.etag == mine.etag


async def test_a_first_report_over_a_stored_one_merges_into_it(store: Store) -> None:
    await store.reports.put(AgentReport(host="rh2", wiped_epoch=2))
    got = await store.reports.merge(
        "rh2", lambda r: dataclasses.replace(r, message="back"), known=None
    )
    assert (got.wiped_epoch, got.message) == (2, "back")


async def test_console_tails_are_flushed_together(store: Store) -> None:
    names = [f"tenants/t/instances/c{i}" for i in range(10)]
    before = store.stats.round_trips["Txn"]
    for n in names:
        for k in range(5):  # a chatty console: only its newest tail is written
            store.consoles.offer(n, f"{n} line {k}\n".encode())

    async def flushed() -> bool:
        return all([await store.consoles.get(n) == f"{n} line 4\n".encode() for n in names])

    await eventually(flushed, timeout=10)
    assert store.stats.round_trips["Txn"] - before == 1  # 10 instances, 50 tails: one txn
    store.consoles.delete_later(names[0])

    async def deleted() -> bool:
        return await store.consoles.get(names[0]) == b""

    await eventually(deleted, timeout=10)
    assert await store.consoles.get(names[1]) != b""
