"""Routing between the subnets of one VPC, on the card (sans-I/O).

The guest sends a frame for another subnet to its gateway, whose MAC is the
card's (the card answers ARP for the gateway).  ``Router.route`` takes such
a frame, already checked by the NIC's services (an IPv4 header whose length
and version were validated, the NIC's own source address), and rewrites it
in place:

1. the destination address is looked up in the VPC directory (exact match:
   every address of the VPC is an interface the control plane listed);
   unknown -> ``no_route`` (the frame is dropped, never flooded);
2. TTL 0 or 1 -> ``ttl_expired`` (dropped; no ICMP time-exceeded is sent);
3. destination MAC := the destination interface's MAC, source MAC := the
   card's (the destination subnet's gateway), TTL decremented and the
   header checksum updated incrementally (RFC 1624, eqn. 3).

The rewritten frame goes out of the TAP into the VPC's bridge, whose static
FDB entries (``offload.network.fabric``) send it straight to the VXLAN
tunnel of the host carrying the destination, or to its local TAP.  The
directory holds only the VPC's own interfaces, so no frame is ever routed
into another VPC.  ``Router`` holds no lock: it is replaced whole (a new
directory is a new router), and reads are single dictionary lookups.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from offload.network import packets as pk

__all__ = ["ROUTE_DROPS", "Neighbor", "Router", "VpcDirectory"]

#: why the router drops a frame
ROUTE_DROPS = ("no_route", "ttl_expired")


@dataclass(frozen=True, slots=True)
class Neighbor:
    """One interface of the VPC: its address, MAC, subnet and instance hostname."""

    ip: IPv4Address
    mac: str
    subnet: IPv4Network
    hostname: str = ""


@dataclass(frozen=True, slots=True)
class VpcDirectory:
    """The VPC's name (its DNS zone label) and every interface of it."""

    vpc: str = ""
    neighbors: tuple[Neighbor, ...] = ()


class Router:
    """Rewrites frames addressed to the gateway towards their destination in the VPC."""

    def __init__(self, directory: VpcDirectory, *, card_mac: bytes) -> None:
        self.directory = directory
        self._card_mac = card_mac
        #: destination address -> the new ethernet addresses (its MAC, then the card's)
        self._table: dict[bytes, bytes] = {
            n.ip.packed: pk.mac_bytes(n.mac) + card_mac for n in directory.neighbors
        }

    def __len__(self) -> int:
        return len(self._table)

    def route(self, frame: bytearray) -> str | None:
        """Rewrite *frame* (ethernet + IPv4) for its next hop; a drop reason if it cannot be."""
        macs = self._table.get(bytes(frame[30:34]))
        if macs is None:
            return "no_route"
        ttl = frame[22]
        if ttl <= 1:
            return "ttl_expired"
        frame[0:12] = macs
        frame[22] = ttl - 1
        # RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'): the word m holding TTL and
        # protocol loses 0x100, so ~m + m' is the constant 0xFEFF
        total = (~int.from_bytes(frame[24:26], "big") & 0xFFFF) + 0xFEFF
        total = (total & 0xFFFF) + (total >> 16)
        frame[24:26] = (~total & 0xFFFF).to_bytes(2, "big")
        return None
