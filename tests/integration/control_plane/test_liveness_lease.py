"""Liveness on ONE lease per replica (real etcd): heartbeats after the first
cost no round trip; a host taken over by another replica survives the first
replica's sweeper; a dead replica's hosts go when its lease expires, except
those whose agents reconnected elsewhere."""

from __future__ import annotations

import pytest

from control_plane.store import Store
from tests.harness.store import StoreFactory, cp_etcd, eventually, root, store, store_factory

__all__ = ["cp_etcd", "root", "store", "store_factory"]
pytestmark = pytest.mark.asyncio(loop_scope="session")

TTL = 2


async def test_heartbeats_after_the_first_cost_no_round_trip(store: Store) -> None:
    hosts = [f"lh{i}" for i in range(20)]
    for h in hosts:
        await store.liveness.heartbeat(h, ttl=TTL)
    assert store.stats.round_trips["LeaseGrant"] == 1  # one lease for the replica

    def per_host() -> int:  # everything but the replica's one keepalive stream
        return store.stats.total - store.stats.round_trips["LeaseKeepAlive"]

    before = per_host()
    for _ in range(5):
        for h in hosts:
            await store.liveness.heartbeat(h, ttl=TTL)
    assert per_host() == before
    live, _ = await store.liveness.live_hosts()
    assert set(hosts) <= live
    assert store.liveness.held() == len(hosts)


async def test_a_dead_replicas_hosts_go_unless_they_moved(store_factory: StoreFactory) -> None:
    a, b = await store_factory(), await store_factory()
    for h in ("stay", "move", "quiet"):
        await a.liveness.heartbeat(h, ttl=TTL)
    await b.liveness.heartbeat("move", ttl=TTL)  # its agent reconnected to b

    async def quiet_gone() -> bool:
        # "stay" keeps heartbeating on a, "move" on b; "quiet" is silent
        await a.liveness.heartbeat("stay", ttl=TTL)
        await b.liveness.heartbeat("move", ttl=TTL)
        return not await a.liveness.is_alive("quiet")

    took = await eventually(quiet_gone, timeout=TTL + 5)
    assert took <= TTL + 2
    # a's sweeper ended "quiet" but left "move", which b holds now
    assert await b.liveness.is_alive("move") and await a.liveness.is_alive("stay")

    await a.aclose()  # replica a dies: its keepalive stops, its lease expires

    async def stay_gone() -> bool:
        await b.liveness.heartbeat("move", ttl=TTL)
        return not await b.liveness.is_alive("stay")

    took = await eventually(stay_gone, timeout=TTL + 5)
    assert took <= TTL + 2
    assert await b.liveness.is_alive("move")


async def test_a_fenced_host_comes_back_on_its_next_heartbeat(store: Store) -> None:
    await store.liveness.heartbeat("fh", ttl=TTL)
    await store.liveness.expire("fh")
    assert not await store.liveness.is_alive("fh")
    await store.liveness.heartbeat("fh", ttl=TTL)
    assert await store.liveness.is_alive("fh")
