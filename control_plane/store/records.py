"""The kind registry and per-kind rules the store applies to records.

- ``KINDS``: collection -> record class, built from ``domain.RESOURCE_TYPES``.
- ``usage_of(record)``: what a record holds against its tenant's quota.  An
  instance holds one instance slot until it is TERMINATED (a terminal state,
  so an update can only ever *release* an instance slot); a volume holds its
  ``size_gib`` until it is deleted.
- ``claims_of(record)``: the values a record holds exclusively -- a network
  interface's ``(subnet, ip)`` and its MAC, a VPC's VXLAN VNI.  The store
  writes one claim key per value (``addresses/``, ``macs/``, ``vnis/``) in
  the txn that creates the record (compared absent) and deletes them with
  the record, so two records can never hold one value.  Claimed values never
  change on a stored record.  ``address_of`` is the address claim alone.
- ``needs_previous(record)``: whether an update must read the stored version
  to compute the usage delta (instances moving to TERMINATED, volumes).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, TypeVar

from control_plane.domain import RESOURCE_TYPES
from control_plane.domain.compute import Instance
from control_plane.domain.lifecycle import INSTANCE_COUNTS_FOR_QUOTA, InstanceState
from control_plane.domain.network import NetworkInterface, Vpc
from control_plane.domain.tenant import QuotaUsage
from control_plane.domain.volume import Volume


class Resource(Protocol):
    """What every stored record has (the domain dataclasses satisfy it)."""

    @property
    def name(self) -> str: ...

    @property
    def etag(self) -> str: ...


R = TypeVar("R", bound=Resource)

KINDS: dict[str, type[Any]] = {cls.COLLECTION: cls for cls in RESOURCE_TYPES}  # type: ignore[attr-defined]

ZERO = QuotaUsage()


def collection_of(cls: type[Any]) -> str:
    coll = getattr(cls, "COLLECTION", None)
    if not isinstance(coll, str) or KINDS.get(coll) is not cls:
        raise TypeError(f"{cls!r} is not a stored resource type")
    return coll


def usage_of(record: object) -> QuotaUsage:
    if isinstance(record, Instance):
        return QuotaUsage(instances=1) if record.state in INSTANCE_COUNTS_FOR_QUOTA else ZERO
    if isinstance(record, Volume):
        return QuotaUsage(volume_gib=record.size_gib)
    return ZERO


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """A value one record holds exclusively: ``kind`` is ``"address"``
    (``scope`` = the subnet), ``"mac"`` or ``"vni"`` (global)."""

    kind: str
    value: str
    scope: str = ""


def address_of(record: object) -> tuple[str, str] | None:
    if isinstance(record, NetworkInterface) and record.subnet and record.ip_address:
        return record.subnet, record.ip_address
    return None


def claims_of(record: object) -> tuple[Claim, ...]:
    if isinstance(record, NetworkInterface):
        out: list[Claim] = []
        addr = address_of(record)
        if addr is not None:
            out.append(Claim("address", addr[1], addr[0]))
        if record.mac:
            out.append(Claim("mac", record.mac.lower()))
        return tuple(out)
    if isinstance(record, Vpc) and record.vni:
        return (Claim("vni", str(record.vni)),)
    return ()


def is_accounted(record: object) -> bool:
    return isinstance(record, Instance | Volume)


def is_accounted_kind(cls: type[Any]) -> bool:
    return cls in (Instance, Volume)


def needs_previous(record: object) -> bool:
    if isinstance(record, Instance):
        return record.state == InstanceState.TERMINATED
    return isinstance(record, Volume)


_TIME_FIELDS: dict[type[Any], frozenset[str]] = {}


def stamp(record: R, *, now: float, created: bool) -> R:
    """Set ``update_time`` (and ``create_time`` on create) if the record has them."""
    changes: dict[str, float] = {}
    names = _TIME_FIELDS.get(type(record))
    if names is None:
        fields = {f.name for f in dataclasses.fields(record)}  # type: ignore[arg-type]
        names = _TIME_FIELDS[type(record)] = frozenset(fields & {"update_time", "create_time"})
    if "update_time" in names:
        changes["update_time"] = now
    if created and "create_time" in names:
        changes["create_time"] = now
    return dataclasses.replace(record, **changes) if changes else record  # type: ignore[type-var]
