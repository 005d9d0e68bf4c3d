"""Quota under concurrent writes of ONE tenant from two replicas (two Store
instances, real etcd).  No lock serializes a tenant's creates, on a replica
or across replicas: the quota and the claims are checked inside the etcd
transaction (it compares the ledger's counter and the tenant record), so
however the writes interleave the tenant never holds more than its quota
and the counters always match the records."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable

import pytest

from control_plane.domain import Instance, InstanceState, Quota, Tenant, Volume
from control_plane.domain.errors import QuotaExceeded
from control_plane.store import Store
from tests.harness.store import StoreFactory, cp_etcd, root, store_factory  # noqa: F401

pytestmark = pytest.mark.asyncio(loop_scope="session")

MAX_INSTANCES, MAX_GIB, VOLUME_GIB = 7, 100, 10


def _instance(k: int) -> Instance:
    return Instance(tenant="t1", id=f"i{k}", instance_type="instanceTypes/m1", image="images/d")


async def _ok(write: Awaitable[object]) -> bool:
    try:
        await write
    except QuotaExceeded:
        return False
    return True


async def _live(store: Store) -> list[Instance]:
    insts, _ = await store.list_all(Instance, parent="tenants/t1")
    return [i for i in insts if i.state != InstanceState.TERMINATED]


async def test_concurrent_creates_of_one_tenant_on_two_replicas_never_exceed_the_quota(
    store_factory: StoreFactory,  # noqa: F811
) -> None:
    a, b = await store_factory(), await store_factory()
    await a.create(
        Tenant(id="t1", quota=Quota(max_instances=MAX_INSTANCES, max_volume_gib=MAX_GIB))
    )
    replicas = (a, b)
    # 40 instances and 30 volumes of 10 GiB, all at once, half on each replica
    # (so each replica also runs many creates of the tenant concurrently)
    outcomes = await asyncio.gather(
        *(_ok(replicas[k % 2].create(_instance(k))) for k in range(40)),
        *(
            _ok(replicas[k % 2].create(Volume(tenant="t1", id=f"v{k}", size_gib=VOLUME_GIB)))
            for k in range(30)
        ),
    )
    assert sum(outcomes[:40]) == MAX_INSTANCES
    assert sum(outcomes[40:]) == MAX_GIB // VOLUME_GIB
    for s in replicas:
        usage = await s.get_usage("t1")
        assert (usage.instances, usage.volume_gib) == (MAX_INSTANCES, MAX_GIB)
    assert len(await _live(a)) == MAX_INSTANCES
    vols, _ = await b.list_all(Volume, parent="tenants/t1")
    assert sum(v.size_gib for v in vols) == MAX_GIB

    # terminations on one replica race creates on the other: a create fits
    # only where a termination freed a slot, never more
    victims = (await _live(a))[:3]
    released = await asyncio.gather(
        *(b.update(dataclasses.replace(v, state=InstanceState.TERMINATED)) for v in victims),
        *(_ok(a.create(_instance(100 + k))) for k in range(10)),
    )
    created_later = sum(1 for r in released[3:] if r is True)
    assert created_later <= 3
    live = await _live(b)
    assert len(live) == MAX_INSTANCES - 3 + created_later
    assert (await b.get_usage("t1")).instances == len(live)
    # what is left free can be taken, and no more
    more = await asyncio.gather(*(_ok(b.create(_instance(200 + k))) for k in range(10)))
    assert sum(more) == MAX_INSTANCES - len(live)
    assert len(await _live(a)) == MAX_INSTANCES
    assert (await a.get_usage("t1")).instances == MAX_INSTANCES


async def test_concurrent_creates_of_one_tenant_share_transactions(
    store_factory: StoreFactory,  # noqa: F811
) -> None:
    """Creates that come while one of their tenant is in flight go together
    in the next txn (group commit); a group whose txn cannot commit (a name
    taken, the quota) falls back to one txn each, and every caller gets what
    its own create would have given it."""
    s = await store_factory()
    await s.create(Tenant(id="t1", quota=Quota(max_instances=30)))
    await s.create(_instance(999))  # the ledger is known: no read below
    txns = s.stats.round_trips["Txn"]
    made = await asyncio.gather(*(s.create(_instance(k)) for k in range(20)))
    assert sorted(i.id for i in made) == sorted(f"i{k}" for k in range(20))
    assert s.stats.round_trips["Txn"] - txns <= 4  # 20 creates, a few txns
    assert len({i.etag for i in made}) < 20  # some were written by one txn
    assert (await s.get_usage("t1")).instances == 21

    # a taken name in a group: it alone fails, the others are created
    outcomes = await asyncio.gather(
        *(s.create(_instance(k)) for k in (100, 101, 5, 102, 103)), return_exceptions=True
    )
    assert [type(o).__name__ for o in outcomes] == ["Instance"] * 2 + ["AlreadyExists"] + [
        "Instance"
    ] * 2
    # five slots left and fifteen creates at once: exactly five are created
    fits = await asyncio.gather(*(_ok(s.create(_instance(200 + k))) for k in range(15)))
    assert sum(fits) == 30 - 25
    assert (await s.get_usage("t1")).instances == 30
    assert len(await _live(s)) == 30
