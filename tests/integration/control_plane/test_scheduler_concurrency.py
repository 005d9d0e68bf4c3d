"""Two independent replicas (own Store, HostCache, Scheduler) place many
instances at once against one real etcd: no host is ever handed out twice."""

from __future__ import annotations

import asyncio
import collections
import random
import time

import pytest

from control_plane.domain import Host, HostState, Instance, InstanceState, PlacementGroup
from control_plane.domain.errors import Aborted, NoCapacity
from control_plane.scheduler import HostCache, Scheduler
from control_plane.store import Store
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
