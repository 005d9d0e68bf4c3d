"""What the control plane wants on this host, as plain dataclasses.

``host_agent.client`` converts each ``DesiredState`` message into a
``Desired`` at the edge, so the reconciler, the power drivers and the tests
never see protobuf.  Field meanings follow ``agent.proto``; generations are
explained there (the action generation of an instance is acted on once).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Power(enum.StrEnum):
    ON = "on"
    OFF = "off"


class Phase(enum.StrEnum):
    """What the agent observes and reports for its instance."""

    PROVISIONING = "PROVISIONING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True, kw_only=True)
class DesiredVolume:
    volume: str
    size_gib: int
    boot: bool = False
    source_image: str = ""
    max_iops: int = 0
    max_mbps: int = 0
    #: the disk's RBD image in the agent's pool ("" = a file on this host)
    rbd_image: str = ""
    #: boot disks with rbd_image: the "IMAGE@SNAP" to clone from
    rbd_parent: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class VpcNeighbor:
    """One interface of the NIC's VPC (the VPC directory the card routes with)."""

    mac: str
    ip: str
    subnet_cidr: str
    underlay_address: str
    hostname: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DesiredNic:
    name: str
    mac: str
    private_ip: str = ""
    subnet_cidr: str = ""
    gateway_ip: str = ""
    vni: int = 0
    vpc: str = ""
    peers: tuple[str, ...] = ()
    neighbors: tuple[VpcNeighbor, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DesiredInstance:
    name: str
    tenant: str = ""
    #: the control plane's instance state (REBOOTING asks for a reset)
    state: str = ""
    power: Power = Power.ON
    terminate: bool = False
    generation: int = 0
    image: str = ""
    image_uri: str = ""
    image_checksum: str = ""
    volumes: tuple[DesiredVolume, ...] = ()
    nics: tuple[DesiredNic, ...] = ()
    hostname: str = ""
    user_data: str = ""
    ssh_keys: tuple[str, ...] = ()
    #: offload-net's --metadata-tokens for every NIC: "required" or "optional"
    metadata_tokens: str = "required"

    @property
    def id(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @property
    def wants_server(self) -> bool:
        """False once the control plane gave up on it (terminating or failed)."""
        return not self.terminate and self.state not in ("FAILED", "TERMINATED")


@dataclass(frozen=True, slots=True, kw_only=True)
class Desired:
    host: str
    generation: int = 0
    host_state: str = ""
    clean: bool = False
    cleaning_epoch: int = 0
    instances: tuple[DesiredInstance, ...] = field(default=())
