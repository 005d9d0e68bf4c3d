"""Creates that claim unique values: a VPC's VNI, an interface's MAC and
address.

VPCs get a random 24-bit VXLAN VNI and network interfaces a random locally
administered MAC (``02:..``), each unique by construction: the store claims
the value in the create transaction (``vnis/{vni}`` / ``macs/{mac}``
compared absent, global), so a drawn value another VPC or interface holds
fails the txn (``VniInUse`` / ``MacInUse``) and the create draws again, at
most ``CLAIM_ATTEMPTS`` times (then ``Aborted``: with 16M VNIs or 2^40 MACs
that means the space is nearly full or the random source is broken).  An
interface's address is the lowest free one of its subnet above the gateway
(``.1``) and reserved ``.2``/``.3``, chosen from the subnet's address
claims and claimed in the same create transaction (``addresses/...``), so
of two concurrent creates picking the same address exactly one wins and the
other (``AddressInUse``) picks the next one.  A replayed ``request_id``
returns the first call's record (the store checks the request before the
claims), whatever was drawn this time.
"""

from __future__ import annotations

import ipaddress
import secrets

from control_plane.domain.errors import Aborted, ResourceExhausted
from control_plane.domain.network import VNI_MAX, VNI_MIN, NetworkInterface, Subnet, Vpc
from control_plane.store import AddressInUse, MacInUse, Store, VniInUse

RESERVED_HOSTS = 3  # .1 gateway, .2 DHCP/metadata, .3 DNS
#: creates of one interface that may lose their address to a concurrent create
ADDRESS_ATTEMPTS = 64
#: random VNIs / MACs one create draws before giving up (each drawn value is
#: claimed in the create txn; a taken one costs one more txn)
CLAIM_ATTEMPTS = 16


def draw_vni() -> int:
    """A random VXLAN network identifier (the create claims it)."""
    return VNI_MIN + secrets.randbelow(VNI_MAX - VNI_MIN + 1)


def draw_mac() -> str:
    """A random locally administered unicast MAC (the create claims it)."""
    return "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))


class Network:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def create_vpc(
        self, *, tenant: str, vpc_id: str, cidr: str, request_id: str, fingerprint: str
    ) -> Vpc:
        for _ in range(CLAIM_ATTEMPTS):
            vpc = Vpc(tenant=tenant, id=vpc_id, cidr=cidr, vni=draw_vni(), request_id=request_id)
            try:
                return await self._store.create(vpc, request_id=request_id, fingerprint=fingerprint)
            except VniInUse:
                continue  # another VPC holds it: draw again
        raise Aborted(f"vpc: {CLAIM_ATTEMPTS} random VXLAN VNIs in a row were already taken; retry")

    async def create_interface(
        self,
        *,
        tenant: str,
        nic_id: str,
        subnet: Subnet,
        request_id: str,
        fingerprint: str,
        instance: str = "",
        delete_on_termination: bool = False,
    ) -> NetworkInterface:
        skip: set[str] = set()
        mac, mac_draws = draw_mac(), 1
        ip: str | None = None
        for _ in range(ADDRESS_ATTEMPTS):
            if ip is None:
                ip = await self.free_address(subnet, skip)
            nic = NetworkInterface(
                tenant=tenant,
                id=nic_id,
                subnet=subnet.name,
                mac=mac,
                ip_address=ip,
                instance=instance,
                delete_on_termination=delete_on_termination,
                request_id=request_id,
            )
            try:
                return await self._store.create(nic, request_id=request_id, fingerprint=fingerprint)
            except AddressInUse as exc:
                skip.add(exc.address)  # a concurrent create took it first: next one
                ip = None
                continue
            except MacInUse:
                if mac_draws >= CLAIM_ATTEMPTS:
                    raise Aborted(
                        f"network_interface: {CLAIM_ATTEMPTS} random MAC addresses in a row"
                        " were already taken; retry"
                    ) from None
                mac, mac_draws = draw_mac(), mac_draws + 1  # another interface holds it
                continue
        raise Aborted(f"{subnet.name}: addresses kept being taken concurrently; retry")

    async def free_address(self, subnet: Subnet, skip: set[str]) -> str:
        """The lowest unclaimed host address of *subnet* (its first
        ``RESERVED_HOSTS`` are the gateway's and the card's); the create
        txn claims it atomically, so a lost race only costs another try."""
        taken = await self._store.addresses_in_use(subnet.name) | skip
        net = ipaddress.ip_network(subnet.cidr)
        for i, addr in enumerate(net.hosts()):
            if i >= RESERVED_HOSTS and str(addr) not in taken:
                return str(addr)
        raise ResourceExhausted(f"{subnet.name}: no free addresses in {subnet.cidr}")
