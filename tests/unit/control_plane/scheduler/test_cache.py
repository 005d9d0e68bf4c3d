"""HostCache bookkeeping without etcd: revision ordering, pools, rack stats,
stale marks and liveness (the watch plumbing is covered by integration tests)."""

from __future__ import annotations

import dataclasses
from typing import cast

from control_plane.domain import Host, HostState, fake_hardware
from control_plane.scheduler.cache import HostCache
from control_plane.scheduler.request import PlacementRequest
from control_plane.store import Store


def _host(i: int, etag: int, **fields: object) -> Host:
    base = Host(
        id=f"h{i}",
        zone="z1",
        rack=f"r{i % 2}",
        host_class="bm-std",
        hardware=fake_hardware(),
        state=HostState.AVAILABLE,
        etag=str(etag),
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


REQ = PlacementRequest(instance="i", host_class="bm-std")


def _ids(cache: HostCache, req: PlacementRequest = REQ) -> set[str]:
    return {h.id for hosts in cache.pools(req).values() for h in hosts}


async def test_only_newer_revisions_are_applied() -> None:
    cache = HostCache(cast(Store, None), track_liveness=False)
    assert cache.apply(_host(0, 5))
    assert not cache.apply(_host(0, 4, state=HostState.ALLOCATED))  # stale watch event
    assert _ids(cache) == {"h0"}
    assert cache.apply(_host(0, 6, state=HostState.ALLOCATED))
    assert _ids(cache) == set()
    cache.remove("h0", 3)  # older than what we hold: ignored
    assert cache.get("h0") is not None
    cache.remove("h0", 7)
    assert cache.get("h0") is None and len(cache) == 0


async def test_pools_and_rack_stats_follow_every_change() -> None:
    cache = HostCache(cast(Store, None), track_liveness=False)
    for i in range(4):
        cache.apply(_host(i, 10 + i))
    cache.apply(_host(4, 20, zone="z2"))
    cache.apply(_host(5, 21, host_class="bm-gpu"))
    assert _ids(cache) == {"h0", "h1", "h2", "h3", "h4"}
    assert _ids(cache, dataclasses.replace(REQ, zone="z2")) == {"h4"}
    assert _ids(cache, dataclasses.replace(REQ, excluded_racks=frozenset({"r0"}))) == {"h1", "h3"}
    stats = cache.rack_stats()
    assert (stats["r0"].total, stats["r0"].free) == (3, 3)  # h0 h2 h4
    assert (stats["r1"].total, stats["r1"].free) == (3, 3)  # h1 h3 and the gpu host h5
    cache.apply(_host(0, 30, cordoned=True))
    assert cache.rack_stats()["r0"].free == 2
    assert cache.free_count() == 5  # 4 std + 1 gpu


async def test_a_lost_race_hides_the_host_until_the_watch_catches_up() -> None:
    cache = HostCache(cast(Store, None), track_liveness=False)
    cache.apply(_host(0, 5))
    cache.mark_stale("h0", 9)
    assert _ids(cache) == set()
    # the watch then delivers the write that beat us
    assert cache.apply(_host(0, 9, state=HostState.ALLOCATED))
    assert _ids(cache) == set()
    assert cache.apply(_host(0, 12))  # freed again later
    assert _ids(cache) == {"h0"}


async def test_a_lost_race_the_watch_already_reported_keeps_the_host() -> None:
    """The watch delivered the write that beat us before the failed txn
    returned: the cache is current, the host stays pooled (hiding it would
    last until its next change, which may never come)."""
    cache = HostCache(cast(Store, None), track_liveness=False)
    cache.apply(_host(0, 5))
    assert cache.apply(_host(0, 9, last_heartbeat=1.0))  # e.g. the liveness stamp
    cache.mark_stale("h0", 9)
    assert _ids(cache) == {"h0"}
    cache.mark_stale("h0", 11)  # a newer write the watch has not delivered yet
    assert _ids(cache) == set()
    assert cache.apply(_host(0, 11))
    assert _ids(cache) == {"h0"}


async def test_monitored_hosts_leave_the_pools_when_their_lease_expires() -> None:
    cache = HostCache(cast(Store, None), track_liveness=True)
    cache.apply(_host(0, 5, last_heartbeat=1.0))
    cache.apply(_host(1, 6))  # never heartbeated: not monitored
    assert _ids(cache) == {"h1"}
    cache.set_live("h0", True)
    assert _ids(cache) == {"h0", "h1"}
    cache.set_live("h0", False)
    assert _ids(cache) == {"h1"}
