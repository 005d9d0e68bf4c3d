"""VPC networking: VPCs (one VXLAN VNI each), subnets inside the VPC CIDR,
and network interfaces (a vhost-user-net backend on the card).

A VPC's ``vni`` and an interface's ``mac`` (and its ``ip_address`` within
the subnet) are unique: the store claims each value in the transaction that
creates the record (``control_plane.store.records.claims_of``).  The names
say which VPC a subnet or interface belongs to (``vpc_name``), no read needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from control_plane.domain.names import make_name, parse_name

#: usable VXLAN network identifiers (24 bits; 0 and 0xFFFFFF left out)
VNI_MIN = 1
VNI_MAX = 2**24 - 2


def vpc_of_subnet(subnet: str) -> str:
    """The VPC name of the AIP subnet name *subnet*."""
    tenant, vpc, _ = parse_name(subnet, collection="subnets").ids
    return make_name("vpcs", tenant, vpc)


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
    #: the primary interface CreateInstance made with its instance: deleted with
    #: it (when it terminates) unless detached first (detaching clears this)
    delete_on_termination: bool = False
    request_id: str = ""
    etag: str = ""
    create_time: float = 0.0
    update_time: float = 0.0

    @property
    def name(self) -> str:
        return make_name("networkInterfaces", self.tenant, self.id)

    @property
    def vpc_name(self) -> str:
        return vpc_of_subnet(self.subnet)
