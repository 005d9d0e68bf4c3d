"""DHCP: a BOOTP/DHCP message from the guest through the NIC's ``classify_tx``.

The input's first byte chooses the envelope (bit 0: unicast from the NIC's
own address to the gateway, as a renewing client sends it; otherwise
broadcast from 0.0.0.0), the rest is the UDP payload to port 67.  Every such
frame is the card's to answer or drop, never to forward, and any reply must
be well formed (``fuzz.nic``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from fuzz.nic import BROADCAST, GATEWAY, NIC_IP, NIC_MAC, Nic, eth, ipv4, udp
from offload.network.hook import TxVerdict

__all__ = ["MAX_LEN", "make", "seeds"]

MAX_LEN: Final = 1500
_COOKIE: Final = bytes.fromhex("63825363")


def frame(data: bytes) -> bytes | None:
    if not data:
        return None
    payload = udp(data[1:], sport=68, dport=67)
    if data[0] & 1:
        return eth(ipv4(payload, 17, src=NIC_IP, dst=GATEWAY))
    return eth(ipv4(payload, 17, src=bytes(4), dst=BROADCAST), dst=b"\xff" * 6)


def make() -> Callable[[bytes], None]:
    def one(data: bytes) -> None:
        f = frame(data)
        if f is None:
            return
        verdict = Nic().send(f)
        if verdict is TxVerdict.FORWARD:
            raise AssertionError("a DHCP client message was forwarded into the VPC")

    return one


def _message(mtype: int, *options: tuple[int, bytes], ciaddr: bytes = bytes(4)) -> bytes:
    fixed = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1, 1, 6, 0, 0x1234ABCD, 0, 0x8000, ciaddr, bytes(4), bytes(4), bytes(4),
        NIC_MAC.ljust(16, b"\0"), b"", b"",
    )  # fmt: skip
    opts = bytes((53, 1, mtype))
    for code, value in options:
        opts += bytes((code, len(value))) + value
    return fixed + _COOKIE + opts + b"\xff"


def seeds() -> dict[str, bytes]:
    params = (55, bytes((1, 3, 6, 12, 15, 26, 28, 51, 54)))
    return {
        "discover": b"\0" + _message(1, params, (61, b"\x01" + NIC_MAC), (57, b"\x05\xdc")),
        "request_selecting": b"\0"
        + _message(3, params, (50, NIC_IP), (54, GATEWAY), (12, b"web-1")),
        "request_renewing": b"\1" + _message(3, params, ciaddr=NIC_IP),
        "inform": b"\1" + _message(8, params, ciaddr=NIC_IP),
        "release": b"\1" + _message(7, (54, GATEWAY), ciaddr=NIC_IP),
        "decline": b"\0" + _message(4, (50, NIC_IP), (54, GATEWAY)),
        "overload_pad_options": b"\0" + _message(1, (52, b"\x03"), (0, b""), params),
    }
