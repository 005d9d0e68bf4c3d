"""Controller writes are fenced by leadership.

Every txn a leader's controllers send also compares the seat's
``create_revision`` (``control_plane.store.fenced``): once the lease has
expired and another replica holds the seat, the old leader's txns fail
with ``LeadershipLost`` and write nothing.  The process test pauses a
leading replica (SIGSTOP) until the other takes over, pauses the new
leader too, resumes the old one and reads etcd's history: not one
revision was written while only the deposed leader ran.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aetcd
import pytest

from control_plane.store import Store, fenced
from control_plane.store.errors import LeadershipLost
from control_plane.store.kv import op_put
from tools.region.control_plane import ControlPlaneProcess
from tools.region.etcd import EtcdServer
from tools.region.wait import wait_for

SEAT = b"/bmaas/v1/leases/controllers"


async def test_a_deposed_leaders_txn_cannot_commit(etcd: EtcdServer) -> None:
    a = await Store.connect(etcd.host, etcd.port)
    b = await Store.connect(etcd.host, etcd.port)
    try:
        lease_a = await a.elections.grant_lease(5)
        won, _, term_a = await a.elections.campaign("fence-test", "a", lease_a)
        assert won and term_a > 0
        fence_a = a.elections.fence("fence-test", term_a)
        with fenced(fence_a):
            await a.kv.txn([], [op_put(b"/bmaas/v1/probe", b"by-a")])
        # a's lease ends (as if it had been paused past its TTL); b is elected
        await a.elections.revoke_lease(lease_a)
        lease_b = await b.elections.grant_lease(5)
        won, _, term_b = await b.elections.campaign("fence-test", "b", lease_b)
        assert won and term_b > term_a
        rev_before = await a.current_revision()
        with fenced(fence_a), pytest.raises(LeadershipLost):
            await a.kv.txn([], [op_put(b"/bmaas/v1/probe", b"a-after-deposed")])
        assert fence_a.lost.is_set()
        # the batched path (controllers' status writes) carries the caller's fence too
        with fenced(fence_a), pytest.raises(LeadershipLost):
            await a.kv.txn([], [op_put(b"/bmaas/v1/probe2", b"x")], [])
        assert await a.current_revision() == rev_before
        kv = await a.kv.get(b"/bmaas/v1/probe")
        assert kv is not None and kv.value == b"by-a"
        # unfenced writers (the API) are unaffected
        await a.kv.txn([], [op_put(b"/bmaas/v1/probe", b"api")])
    finally:
        await a.aclose()
        await b.aclose()


async def _seat(etcd: EtcdServer) -> tuple[str, int] | None:
    async with aetcd.Client(host=etcd.host, port=etcd.port) as client:
        got = await client.get(SEAT)
        if got is None:
            return None
        return got.value.decode(), int(got.create_revision)


async def _revision(etcd: EtcdServer) -> int:
    async with aetcd.Client(host=etcd.host, port=etcd.port) as client:
        status = await client.kvstub.Range(
            aetcd.rpc.RangeRequest(key=b"/", count_only=True), timeout=5
        )
        return int(status.header.revision)


def _pid_of(identity: str) -> int:
    return int(identity.rsplit("-", 2)[1])


async def test_a_paused_leader_commits_nothing_after_losing_its_lease(etcd: EtcdServer) -> None:
    ttl = 8  # etcd lease of 7 s: the paused new leader keeps the seat through the window
    a = ControlPlaneProcess(etcd, lease_ttl=ttl)
    b = ControlPlaneProcess(etcd, lease_ttl=ttl)
    await asyncio.to_thread(a.start)
    await asyncio.to_thread(b.start)
    procs = {p.proc.pid: p for p in (a, b) if p.proc is not None}
    stopped: list[int] = []
    try:
        seat = await wait_for(lambda: _seat(etcd), 20)
        old_pid = _pid_of(seat[0])
        assert old_pid in procs
        new_pid = next(pid for pid in procs if pid != old_pid)

        os.kill(old_pid, signal.SIGSTOP)
        stopped.append(old_pid)
        started = time.monotonic()

        async def taken_over() -> bool:
            s = await _seat(etcd)
            return s is not None and _pid_of(s[0]) == new_pid

        await wait_for(taken_over, 20)
        handover = time.monotonic() - started
        assert handover < ttl + 3, f"handover took {handover:.1f} s"
        await asyncio.sleep(1.0)  # the new leader's controllers start and settle

        os.kill(new_pid, signal.SIGSTOP)  # now nobody but the deposed leader can write
        stopped.append(new_pid)
        before = await _revision(etcd)
        os.kill(old_pid, signal.SIGCONT)
        stopped.remove(old_pid)
        await asyncio.sleep(3.0)
        after = await _revision(etcd)
        assert after == before, f"the deposed leader committed {after - before} revisions"
        os.kill(new_pid, signal.SIGCONT)
        stopped.remove(new_pid)
        log = procs[old_pid].tail(200)
        assert "stepping down" in log, log
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        a.close()
        b.close()
