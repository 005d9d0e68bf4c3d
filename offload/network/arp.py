"""ARP for IPv4 over ethernet: parse a request, build the card's reply.

Only the one layout we serve is accepted (hardware type 1, protocol 0x0800,
lengths 6 and 4); anything else parses to ``None``.  The caller decides
whether a request is one the card answers (gateway, metadata address) and
whether its sender fields are the NIC's own; this module only reads and
writes bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from offload.network.packets import ETHERTYPE_ARP, build_ethernet

__all__ = ["ARP_REPLY", "ARP_REQUEST", "ArpPacket", "build_arp_reply", "parse_arp"]

ARP_REQUEST = 1
ARP_REPLY = 2
_ARP = struct.Struct("!HHBBH6s4s6s4s")


@dataclass(frozen=True, slots=True)
class ArpPacket:
    op: int
    sender_mac: bytes
    sender_ip: bytes
    target_mac: bytes
    target_ip: bytes


def parse_arp(data: bytes) -> ArpPacket | None:
    """The ARP packet in an ethernet payload, or ``None`` if it is not IPv4-over-ethernet."""
    if len(data) < _ARP.size:
        return None
    htype, ptype, hlen, plen, op, smac, sip, tmac, tip = _ARP.unpack_from(data)
    if htype != 1 or ptype != 0x0800 or hlen != 6 or plen != 4:
        return None
    return ArpPacket(op, smac, sip, tmac, tip)


def build_arp_reply(*, our_mac: bytes, our_ip: bytes, to_mac: bytes, to_ip: bytes) -> bytes:
    """The ethernet frame saying "*our_ip* is at *our_mac*", sent to *to_mac*."""
    body = _ARP.pack(1, 0x0800, 6, 4, ARP_REPLY, our_mac, our_ip, to_mac, to_ip)
    return build_ethernet(to_mac, our_mac, ETHERTYPE_ARP, body)
