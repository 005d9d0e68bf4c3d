"""VPC networking: VPCs (one VXLAN VNI each), subnets inside the VPC CIDR,
and network interfaces (a vhost-user-net backend on the card)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from control_plane.domain.names import make_name


@dataclass(frozen=True, slots=True, kw_only=True)
class Vpc:
    COLLECTION: ClassVar[str] = "vpcs"

    tenant: str
    id: str
    cidr: str
    vni: int = 0
    request_id: str = ""
    etag: str = ""
    create_time: float = 0.0
    update_time: float = 0.0

    @property
    def name(self) -> str:
        return make_name("vpcs", self.tenant, self.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Subnet:
    COLLECTION: ClassVar[str] = "subnets"

    tenant: str
    vpc: str
    id: str
    cidr: str
    zone: str = ""
    request_id: str = ""
    etag: str = ""
    create_time: float = 0.0
    update_time: float = 0.0

    @property
    def name(self) -> str:
        return make_name("subnets", self.tenant, self.vpc, self.id)

    @property
    def vpc_name(self) -> str:
        return make_name("vpcs", self.tenant, self.vpc)


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkInterface:
    COLLECTION: ClassVar[str] = "networkInterfaces"

    tenant: str
    id: str
    subnet: str
    mac: str = ""
    ip_address: str = ""
    instance: str = ""
    request_id: str = ""
    etag: str = ""
    create_time: float = 0.0
    update_time: float = 0.0

    @property
    def name(self) -> str:
        return make_name("networkInterfaces", self.tenant, self.id)
