"""Whether an instance leaves a failed host: the failover decision, pure.

A host UNREACHABLE for ``failover_grace`` seconds (measured from the
transition time of its ``HostReachable=False`` condition) whose instance
has only cloud disks is given up: the failover controller fences the old
card out of the disks, unbinds the instance (``host_failed``: back to
PENDING) and the scheduler places it again on an AVAILABLE host of the
same class and zone.  ``decide`` says which of these applies:

- ``None``: nothing to do (the host is not UNREACHABLE, has no instance,
  or the instance is not in a movable state);
- ``Wait(delay)``: not yet, look again after *delay* seconds;
- ``Stay(reason)``: never moved (files on the host, or instance-store
  disks that cannot follow it); the reason goes into a condition;
- ``Move()``: fence and move now.
"""

from __future__ import annotations

from dataclasses import dataclass

from control_plane.domain.compute import Instance
from control_plane.domain.conditions import ConditionStatus, ConditionType, find_condition
from control_plane.domain.host import Host
from control_plane.domain.lifecycle import INSTANCE_MOVABLE, HostState
from control_plane.domain.storage import StorageConfig, boot_image, volume_image


@dataclass(frozen=True, slots=True)
class Wait:
    delay: float


@dataclass(frozen=True, slots=True)
class Stay:
    reason: str


@dataclass(frozen=True, slots=True)
class Move:
    pass


Decision = Wait | Stay | Move | None


def unreachable_since(host: Host) -> float | None:
    cond = find_condition(host.conditions, ConditionType.HOST_REACHABLE)
    if cond is None or cond.status != ConditionStatus.FALSE:
        return None
    return cond.last_transition_time


def decide(host: Host, inst: Instance | None, *, storage: StorageConfig, now: float) -> Decision:
    if host.state != HostState.UNREACHABLE or inst is None:
        return None
    if inst.host != host.name or inst.state not in INSTANCE_MOVABLE:
        return None
    if not storage.rbd:
        return Stay(f"its disks are files on {host.name} (storage back-end 'file')")
    if host.hardware.disks:
        names = ", ".join(d.name for d in host.hardware.disks)
        return Stay(f"{host.name} has instance-store disks ({names}) that cannot move")
    since = unreachable_since(host)
    if since is None:
        return None
    left = since + storage.failover_grace - now
    return Wait(left) if left > 0 else Move()


def disk_images(inst: Instance) -> list[str]:
    """The RBD images an instance's card opens: its boot disk, then its volumes."""
    images = [boot_image(inst.tenant, inst.id)]
    for name in inst.volumes:
        # "tenants/T/volumes/V"
        parts = name.split("/")
        if len(parts) == 4 and parts[2] == "volumes":
            images.append(volume_image(parts[1], parts[3]))
    return images
