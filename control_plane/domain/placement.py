"""Placement groups.  ``SPREAD_RACKS``: no two instances of the group on
hosts in the same rack.

``placements`` records (instance, rack) for every member bound to a host.
The scheduler writes it in the same transaction that binds the instance to
the host (comparing the group's etag), so two replicas placing members of
one group concurrently can never both pick the same rack; the instance
controller removes the entry in the transaction that releases the host."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import ClassVar

from control_plane.domain.names import make_name


class PlacementStrategy(enum.StrEnum):
    SPREAD_RACKS = "SPREAD_RACKS"


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupPlacement:
    instance: str
    rack: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementGroup:
    COLLECTION: ClassVar[str] = "placementGroups"

    tenant: str
    id: str
    strategy: PlacementStrategy = PlacementStrategy.SPREAD_RACKS
    placements: tuple[GroupPlacement, ...] = ()
    request_id: str = ""
    etag: str = ""
    create_time: float = 0.0
    update_time: float = 0.0

    @property
    def name(self) -> str:
        return make_name("placementGroups", self.tenant, self.id)

    @property
    def racks(self) -> frozenset[str]:
        return frozenset(p.rack for p in self.placements)

    def with_member(self, instance: str, rack: str) -> PlacementGroup:
        kept = tuple(p for p in self.placements if p.instance != instance)
        return dataclasses.replace(
            self, placements=(*kept, GroupPlacement(instance=instance, rack=rack))
        )

    def without_member(self, instance: str) -> PlacementGroup:
        kept = tuple(p for p in self.placements if p.instance != instance)
        return dataclasses.replace(self, placements=kept)
