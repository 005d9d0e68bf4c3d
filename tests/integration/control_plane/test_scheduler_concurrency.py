"""Two independent replicas (own Store, HostCache, Scheduler) place many
instances at once against one real etcd: no host is ever handed out twice."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import time

import pytest

from control_plane.domain import Host, HostState, Instance, InstanceState, PlacementGroup
from control_plane.domain.errors import Aborted, NoCapacity, QuotaExceeded
from control_plane.scheduler import HostCache, Scheduler
from control_plane.store import RecordChanged, Store
from tests.harness.store import (
    StoreFactory,
    cp_etcd,
    root,
    seed_catalog,
    seed_hosts,
    store,
    store_factory,
)

__all__ = ["cp_etcd", "root", "store", "store_factory"]
pytestmark = pytest.mark.asyncio(loop_scope="session")

HOSTS = 120
INSTANCES = 150


async def _pending(store: Store, n: int, *, zone: str = "", group: str = "") -> list[Instance]:
    return [
        await store.create(
            Instance(
                tenant="t1",
                id=f"i{k:04d}",
                instance_type="instanceTypes/m1",
                image="images/d",
                zone=zone,
                placement_group=group,
            )
        )
        for k in range(n)
    ]


async def _place_all(scheduler: Scheduler, todo: list[Instance], results: dict[str, str]) -> None:
    for inst in todo:
        while True:
            try:
                placement = await scheduler.place(inst)
            except NoCapacity:
                results[inst.name] = "no-capacity"
            except Aborted:
                continue  # lost every race this round: try again
            else:
                results[inst.name] = placement.host.id
            break


async def test_two_replicas_never_allocate_one_host_twice(store_factory: StoreFactory) -> None:
    admin = await store_factory()
    await seed_catalog(admin)
    await seed_hosts(admin, HOSTS, racks=6)
    instances = await _pending(admin, INSTANCES)
    replicas = []
    for _ in range(2):
        s = await store_factory()
        cache = HostCache(s)
        await cache.start()
        # the same seed on both replicas maximises collisions on the same candidates
        replicas.append((s, cache, Scheduler(s, cache, rng=random.Random(7))))
    assert all(len(cache) == HOSTS for _, cache, _ in replicas)

    results: dict[str, str] = {}
    lanes = 8
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _place_all(replicas[lane % 2][2], instances[lane::lanes], results)
            for lane in range(lanes)
        )
    )
    elapsed = time.perf_counter() - started
    for _, cache, _ in replicas:
        await cache.aclose()

    placed = {name: host for name, host in results.items() if host != "no-capacity"}
    assert len(placed) == HOSTS
    assert list(results.values()).count("no-capacity") == INSTANCES - HOSTS
    assert len(set(placed.values())) == HOSTS  # no host twice

    hosts, _ = await admin.list_all(Host)
    assert all(h.state == HostState.ALLOCATED for h in hosts)
    by_host = {h.name: h.assigned_instance for h in hosts}
    stored, _ = await admin.list_all(Instance)
    scheduled = [i for i in stored if i.state == InstanceState.SCHEDULED]
    assert len(scheduled) == HOSTS
    for inst in scheduled:
        assert by_host[inst.host] == inst.name  # both sides of every binding agree
    txns = sum(s.stats.round_trips["Txn"] for s, _, _ in replicas)
    print(
        f"\n{HOSTS} placements by 2 replicas in {elapsed:.2f}s = {HOSTS / elapsed:.0f}/s; "
        f"{txns} bind txns ({txns / HOSTS:.2f} per placement)"
    )


async def test_placement_group_spreads_across_racks_under_concurrency(
    store_factory: StoreFactory,
) -> None:
    admin = await store_factory()
    await seed_catalog(admin)
    await seed_hosts(admin, 24, racks=4)  # 4 racks x 6 hosts
    await admin.create(PlacementGroup(tenant="t1", id="pg"))
    instances = await _pending(admin, 6, group="tenants/t1/placementGroups/pg")
    scheds = []
    for seed in range(2):
        s = await store_factory()
        cache = HostCache(s)
        await cache.start()
        scheds.append((cache, Scheduler(s, cache, rng=random.Random(seed))))
    results: dict[str, str] = {}
    await asyncio.gather(
        *(_place_all(scheds[k % 2][1], [inst], results) for k, inst in enumerate(instances))
    )
    for cache, _ in scheds:
        await cache.aclose()
    placed = [h for h in results.values() if h != "no-capacity"]
    assert len(placed) == 4  # one per rack, then nothing fits
    racks = collections.Counter(int(h[1:]) % 4 for h in placed)
    assert all(count == 1 for count in racks.values())
    group = await admin.get(PlacementGroup, "tenants/t1/placementGroups/pg")
    assert len(group.racks) == 4


async def test_cache_follows_the_watch_and_no_capacity_when_nothing_fits(store: Store) -> None:
    await seed_catalog(store)
    cache = HostCache(store)
    await cache.start()
    try:
        sched = Scheduler(store, cache, rng=random.Random(1))
        (inst,) = await _pending(store, 1, zone="z1")
        try:
            await sched.place(inst)
        except NoCapacity as exc:
            assert "bm-std" in str(exc)
        else:
            raise AssertionError("placed on no hosts")
        await seed_hosts(store, 1)
        for _ in range(100):
            if cache.free_count() == 1:
                break
            await asyncio.sleep(0.02)
        placement = await sched.place(inst)
        assert placement.host.id == "h00000"
        assert placement.round_trips == 1  # instance type cached: just the bind txn
        assert placement.instance.state == InstanceState.SCHEDULED
        assert cache.free_count() == 0
    finally:
        await cache.aclose()


def _new(k: int, *, tenant: str = "t1", group: str = "") -> Instance:
    return Instance(
        tenant=tenant,
        id=f"n{k:04d}",
        instance_type="instanceTypes/m1",
        image="images/d",
        placement_group=group,
        request_id=f"req-{k:04d}",
    )


async def _create_all(scheduler: Scheduler, todo: list[Instance], results: dict[str, str]) -> None:
    for inst in todo:
        while True:
            try:
                created = await scheduler.create_placed(inst, request_id=inst.request_id)
            except NoCapacity:
                results[inst.name] = "no-capacity"
            except QuotaExceeded:
                results[inst.name] = "quota"
            except Aborted:
                continue
            else:
                assert not created.replayed
                results[inst.name] = created.record.host
            break


async def test_create_and_bind_in_one_txn_never_gives_a_host_twice_and_charges_exactly(
    store_factory: StoreFactory,
) -> None:
    """Two replicas create-and-place concurrently (one txn each): every host
    at most once, both sides of every binding agree, usage = instances
    created, and the quota stops creates exactly at its limit."""
    admin = await store_factory()
    quota = 100
    await seed_catalog(admin, max_instances=quota)
    await seed_hosts(admin, HOSTS, racks=6)  # more hosts than the quota allows
    replicas = []
    for _ in range(2):
        s = await store_factory()
        cache = HostCache(s)
        await cache.start()
        replicas.append((s, cache, Scheduler(s, cache, rng=random.Random(7))))
    todo = [_new(k) for k in range(INSTANCES)]
    results: dict[str, str] = {}
    lanes = 8
    await asyncio.gather(
        *(_create_all(replicas[lane % 2][2], todo[lane::lanes], results) for lane in range(lanes))
    )
    for _, cache, _ in replicas:
        await cache.aclose()

    placed = {name: host for name, host in results.items() if host.startswith("hosts/")}
    assert len(placed) == quota
    assert list(results.values()).count("quota") == INSTANCES - quota
    assert len(set(placed.values())) == quota  # no host twice
    assert (await admin.get_usage("t1")).instances == quota
    stored, _ = await admin.list_all(Instance)
    assert {i.name for i in stored} == set(placed)
    hosts = {h.name: h for h in (await admin.list_all(Host))[0]}
    for inst in stored:
        assert inst.state == InstanceState.SCHEDULED
        assert hosts[inst.host].state == HostState.ALLOCATED
        assert hosts[inst.host].assigned_instance == inst.name
    assert sum(h.state == HostState.ALLOCATED for h in hosts.values()) == quota

    # a retry of a request that already created replays it and binds nothing more
    sched = replicas[0][2]
    first = next(i for i in stored)
    again = await sched.create_placed(
        dataclasses.replace(first, state=InstanceState.PENDING, host="", etag=""),
        request_id=first.request_id,
    )
    assert again.replayed and again.record.host == first.host
    assert (await admin.get_usage("t1")).instances == quota


async def test_create_placed_writes_nothing_without_capacity_or_on_a_lost_race(
    store: Store,
) -> None:
    await seed_catalog(store)
    cache = HostCache(store)
    await cache.start()
    try:
        sched = Scheduler(store, cache, rng=random.Random(1))
        with pytest.raises(NoCapacity):
            await sched.create_placed(_new(1), request_id="req-0001")
        assert (await store.get_usage("t1")).instances == 0
        assert (await store.list_all(Instance))[0] == []

        (host,) = await seed_hosts(store, 1)
        stale = host
        moved = await store.update(dataclasses.replace(host, cordoned=False, maintenance=False))
        # the host moved since it was read: the txn fails, nothing is written
        bound = dataclasses.replace(_new(2), state=InstanceState.SCHEDULED, host=host.name)
        with pytest.raises(RecordChanged):
            await store.create_or_replay(
                bound,
                request_id="req-0002",
                together=[dataclasses.replace(stale, state=HostState.ALLOCATED)],
            )
        assert (await store.get_usage("t1")).instances == 0
        assert (await store.list_all(Instance))[0] == []
        assert (await store.get(Host, host.name)).etag == moved.etag

        for _ in range(100):
            if cache.get(host.id) is not None and cache.get(host.id).etag == moved.etag:
                break
            await asyncio.sleep(0.02)
        created = await sched.create_placed(_new(2), request_id="req-0002")
        assert created.record.state == InstanceState.SCHEDULED
        assert created.record.host == host.name
        stored = await store.get(Instance, created.record.name)
        assert stored.etag == created.record.etag
        assert any(c.type == "Scheduled" and c.status == "True" for c in stored.conditions)
        assert (await store.get(Host, host.name)).assigned_instance == stored.name
        assert (await store.get_usage("t1")).instances == 1
    finally:
        await cache.aclose()
