"""ARP: a packet from the guest through the NIC's ``classify_tx``.

The input is the ethernet payload of an ARP frame from the NIC's MAC
(broadcast destination).  A reply, if any, must be a well-formed ARP reply
from the card to the NIC (``fuzz.nic``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from fuzz.nic import GATEWAY, METADATA_IP, NIC_IP, NIC_MAC, Nic, eth

__all__ = ["MAX_LEN", "make", "seeds"]

MAX_LEN: Final = 256


def make() -> Callable[[bytes], None]:
    def one(data: bytes) -> None:
        Nic().send(eth(data, 0x0806, dst=b"\xff" * 6))

    return one


def _arp(op: int, *, target_ip: bytes, sender_mac: bytes = NIC_MAC, sender_ip: bytes = NIC_IP,
         target_mac: bytes = bytes(6)) -> bytes:  # fmt: skip
    return struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sender_mac, sender_ip, target_mac, target_ip
    )


def seeds() -> dict[str, bytes]:
    return {
        "who_has_gateway": _arp(1, target_ip=GATEWAY),
        "who_has_metadata": _arp(1, target_ip=METADATA_IP),
        "who_has_peer": _arp(1, target_ip=bytes((10, 8, 0, 9))),
        "gratuitous_reply": _arp(2, target_ip=NIC_IP, target_mac=NIC_MAC),
        "spoofed_sender": _arp(1, target_ip=GATEWAY, sender_ip=bytes((10, 8, 0, 7))),
        "padded_to_minimum_frame": _arp(1, target_ip=GATEWAY) + bytes(18),
    }
