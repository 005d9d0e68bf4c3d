"""The pure scheduler core: every filter, rack packing, and deterministic ordering."""

from __future__ import annotations

import dataclasses
import random

import pytest

from control_plane.domain import Condition, ConditionStatus, Host, HostState, fake_hardware
from control_plane.scheduler.filters import FILTERS, first_failure, passes, passes_static
from control_plane.scheduler.request import PlacementRequest
from control_plane.scheduler.scoring import RackStats, order_candidates, rack_order


def _host(i: int = 0, **fields: object) -> Host:
    base = Host(
        id=f"h{i}",
        zone="z1",
        rack=f"r{i % 3}",
        host_class="bm-std",
        hardware=fake_hardware(),
        state=HostState.AVAILABLE,
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


REQ = PlacementRequest(instance="tenants/t/instances/i", host_class="bm-std", zone="z1")


def test_a_plain_available_host_passes_every_filter() -> None:
    assert passes(_host(), REQ)
    assert passes(_host(), dataclasses.replace(REQ, zone=""))  # any zone
    assert passes_static(_host())


@pytest.mark.parametrize(
    ("change", "req_change", "failing"),
    [
        ({"host_class": "bm-gpu"}, {}, "host_class"),
        ({"zone": "z2"}, {}, "zone"),
        ({"state": HostState.CLEANING}, {}, "available"),
        ({"state": HostState.ENROLLED}, {}, "available"),
        ({"state": HostState.UNREACHABLE}, {}, "available"),
        ({"assigned_instance": "tenants/t/instances/x"}, {}, "available"),
        ({"cordoned": True}, {}, "not_cordoned"),
        ({"maintenance": True}, {}, "not_in_maintenance"),
        (
            {"conditions": (Condition("HostReachable", ConditionStatus.FALSE),)},
            {},
            "healthy",
        ),
        ({"conditions": (Condition("Impaired", ConditionStatus.TRUE),)}, {}, "healthy"),
        ({}, {"excluded_racks": frozenset({"r0"})}, "spread"),
        ({}, {"excluded_hosts": frozenset({"h0"})}, "not_excluded"),
    ],
)
def test_each_filter_rejects_its_case(
    change: dict[str, object], req_change: dict[str, object], failing: str
) -> None:
    req = dataclasses.replace(REQ, **req_change)  # type: ignore[arg-type]
    assert first_failure(_host(0, **change), req) == failing


def test_liveness_only_binds_hosts_that_ever_heartbeated() -> None:
    monitored = _host(last_heartbeat=10.0)
    assert first_failure(monitored, REQ, live=set()) == "healthy"
    assert passes(monitored, REQ, live={"h0"})
    assert passes(_host(), REQ, live=set())  # agentless simulated host
    assert passes(monitored, REQ, live=None)  # liveness not tracked


def test_filter_names_are_unique() -> None:
    names = [n for n, _ in FILTERS]
    assert len(names) == len(set(names))


def test_racks_are_packed_fullest_first() -> None:
    stats = {"a": RackStats(total=10, free=9), "b": RackStats(10, 2), "c": RackStats(10, 5)}
    assert rack_order(["a", "b", "c"], stats, random.Random(0)) == ["b", "c", "a"]
    assert RackStats(0, 0).used_fraction == 0.0


def test_candidates_prefer_full_racks_then_oldest_wipe_and_are_deterministic() -> None:
    pools = {
        "full": [
            _host(1, rack="full", last_cleaned_time=50.0),
            _host(2, rack="full", last_cleaned_time=10.0),
        ],
        "empty": [_host(3, rack="empty"), _host(4, rack="empty")],
    }
    stats = {"full": RackStats(10, 2), "empty": RackStats(10, 10)}
    order = order_candidates(pools, stats, random.Random(1), window=1)
    assert [h.id for h in order][:2] == ["h2", "h1"]
    assert {h.id for h in order[2:]} == {"h3", "h4"}
    again = order_candidates(pools, stats, random.Random(1), window=1)
    assert [h.id for h in order] == [h.id for h in again]
    skipped = order_candidates(pools, stats, random.Random(1), exclude={"h2"}, window=1)
    assert skipped[0].id == "h1"
    assert len(order_candidates(pools, stats, random.Random(1), limit=3)) == 3


def test_window_shuffle_spreads_replicas_over_the_top_candidates() -> None:
    pools = {"r": [_host(i, rack="r") for i in range(20)]}
    stats = {"r": RackStats(20, 20)}
    firsts = {
        order_candidates(pools, stats, random.Random(seed), window=8)[0].id for seed in range(40)
    }
    assert len(firsts) > 3
