"""What the scheduler is asked to place (pure data)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementRequest:
    instance: str
    host_class: str
    #: "" = any zone
    zone: str = ""
    placement_group: str = ""
    #: racks already used by the placement group (SPREAD_RACKS)
    excluded_racks: frozenset[str] = field(default_factory=frozenset)
    #: hosts this request already lost a race for
    excluded_hosts: frozenset[str] = field(default_factory=frozenset)
