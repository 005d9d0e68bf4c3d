"""Host filters: pure predicates ``(host, request, live) -> bool``.

``live`` is the set of host ids whose heartbeat lease is alive, or None when
liveness is not tracked (then the host's ``HostReachable`` condition alone
decides).  A host whose agent never heartbeated (``Host.monitored`` false,
e.g. fake-power simulated hosts) is judged by state and conditions only.

``FILTERS`` is ordered cheapest-first; ``first_failure`` names the filter a
host fails (for NoCapacity explanations), ``passes`` checks them all.  The
host cache keeps per-(class, zone, rack) pools of hosts passing the
*static* filters, so a placement only evaluates the request-specific ones.
"""

from __future__ import annotations

from collections.abc import Callable, Set

from control_plane.domain.conditions import ConditionStatus, ConditionType, condition_is
from control_plane.domain.host import Host
from control_plane.domain.lifecycle import HOST_ALLOCATABLE
from control_plane.scheduler.request import PlacementRequest

HostFilter = Callable[[Host, PlacementRequest, Set[str] | None], bool]


def host_class_matches(host: Host, req: PlacementRequest, live: Set[str] | None) -> bool:
    return host.host_class == req.host_class


def zone_matches(host: Host, req: PlacementRequest, live: Set[str] | None) -> bool:
    return not req.zone or host.zone == req.zone


def is_available(host: Host, req: PlacementRequest, live: Set[str] | None) -> bool:
    return host.state in HOST_ALLOCATABLE and not host.assigned_instance


def not_cordoned(host: Host, req: PlacementRequest, live: Set[str] | None) -> bool:
    return not host.cordoned


def not_in_maintenance(host: Host, req: PlacementRequest, live: Set[str] | None) -> bool:
    return not host.maintenance


def is_healthy(host: Host, req: PlacementRequest, live: Set[str] | None) -> bool:
    if condition_is(host.conditions, ConditionType.HOST_REACHABLE, ConditionStatus.FALSE):
        return False
    if condition_is(host.conditions, ConditionType.IMPAIRED, ConditionStatus.TRUE):
        return False
    return live is None or not host.monitored or host.id in live


def spread_ok(host: Host, req: PlacementRequest, live: Set[str] | None) -> bool:
    return host.rack not in req.excluded_racks


def not_excluded(host: Host, req: PlacementRequest, live: Set[str] | None) -> bool:
    return host.id not in req.excluded_hosts


#: Filters that depend only on the host (the cache pre-applies them).
STATIC_FILTERS: tuple[tuple[str, HostFilter], ...] = (
    ("available", is_available),
    ("not_cordoned", not_cordoned),
    ("not_in_maintenance", not_in_maintenance),
    ("healthy", is_healthy),
)

FILTERS: tuple[tuple[str, HostFilter], ...] = (
    ("host_class", host_class_matches),
    ("zone", zone_matches),
    *STATIC_FILTERS,
    ("spread", spread_ok),
    ("not_excluded", not_excluded),
)


def first_failure(host: Host, req: PlacementRequest, live: Set[str] | None = None) -> str | None:
    """The name of the first filter *host* fails, or None if it passes all."""
    for name, flt in FILTERS:
        if not flt(host, req, live):
            return name
    return None


def passes(host: Host, req: PlacementRequest, live: Set[str] | None = None) -> bool:
    return first_failure(host, req, live) is None


def passes_static(host: Host, live: Set[str] | None = None) -> bool:
    probe = PlacementRequest(instance="", host_class=host.host_class)
    return all(flt(host, probe, live) for _, flt in STATIC_FILTERS)
