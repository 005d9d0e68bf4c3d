"""Physical hosts: hardware profile, lifecycle state, and liveness fields.

``state`` follows ``lifecycle.HOST_TRANSITIONS``.  ``cordoned`` keeps a host
out of new placements without changing its state; ``maintenance`` is an
operator's request that moves the host to MAINTENANCE as soon as no instance
is bound to it.  ``cleaning_epoch`` grows each time the host enters CLEANING;
an agent's wipe report names the epoch it wiped, so a stale report never
completes a newer cleaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from control_plane.domain.conditions import Condition
from control_plane.domain.lifecycle import HostState
from control_plane.domain.names import host_name


@dataclass(frozen=True, slots=True, kw_only=True)
class Disk:
    name: str
    size_gib: int
    kind: str = "nvme"


@dataclass(frozen=True, slots=True, kw_only=True)
class Nic:
    name: str
    mac: str = ""
    speed_gbps: int = 25


@dataclass(frozen=True, slots=True, kw_only=True)
class HardwareProfile:
    cpus: int
    memory_gib: int
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Host:
    COLLECTION: ClassVar[str] = "hosts"

    id: str
    zone: str
    rack: str
    host_class: str
    hardware: HardwareProfile
    power_driver: str = "fake"
    state: HostState = HostState.ENROLLED
    cordoned: bool = False
    maintenance: bool = False
    maintenance_reason: str = ""
    assigned_instance: str = ""
    conditions: tuple[Condition, ...] = ()
    agent_credential_hash: str = ""
    last_heartbeat: float = 0.0
    cleaning_epoch: int = 0
    cleaning_started_time: float = 0.0
    last_cleaned_time: float = 0.0
    #: reported by the agent at Register: the card's VXLAN tunnel endpoint
    underlay_address: str = ""
    #: reported by the agent: CPUs kept for the card, not for tenants
    card_cpus: int = 0
    etag: str = ""
    create_time: float = 0.0
    update_time: float = 0.0

    @property
    def name(self) -> str:
        return host_name(self.id)

    @property
    def monitored(self) -> bool:
        """True once an agent has heartbeated: from then on silence makes it UNREACHABLE."""
        return self.last_heartbeat > 0.0


def fake_hardware(cpus: int = 64, memory_gib: int = 256) -> HardwareProfile:
    """A plausible profile for simulated hosts (tests, benchmarks)."""
    return HardwareProfile(
        cpus=cpus,
        memory_gib=memory_gib,
        disks=(Disk(name="nvme0", size_gib=1920),),
        nics=(Nic(name="eth0"),),
    )
