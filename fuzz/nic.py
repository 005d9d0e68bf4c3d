"""One NIC's card services for the frame targets: the fixture, frame builders, an oracle.

``Nic`` wraps ``NicServices`` (the ``NicHook`` a virtio-net device calls
with every frame the guest sends) for a NIC with an address, a gateway, DNS
servers and metadata with user data.  ``send`` hands it one ethernet frame
and raises when the card broke a rule it must keep:

* ``classify_tx`` swallows a service's exception (counted in
  ``internal_errors`` and logged) so that a bug never stops a ring; here it
  is re-raised, with the logged traceback attached, as a crash;
* every reply must be well formed (``check_reply``, written independently of
  ``offload.network.packets``): from the card's MAC to the NIC's, ARP or
  IPv4 without options, a correct header checksum, a total length that
  matches, and a correct UDP or TCP checksum.

Builders put a payload in the headers a guest would use (``eth``,
``ipv4``, ``udp``, ``tcp``); checksums are filled in but the card does not
check them.  The clock is fixed, so an input always does the same thing.
"""

from __future__ import annotations

import logging
import struct
from ipaddress import IPv4Address, IPv4Interface
from typing import Final

from offload.network.hook import TxVerdict
from offload.network.services import InstanceMetadata, NicConfig, NicServices

__all__ = [
    "CARD_MAC",
    "GATEWAY",
    "METADATA_IP",
    "NIC_IP",
    "NIC_MAC",
    "Nic",
    "ServiceFailed",
    "check_reply",
    "eth",
    "ipv4",
    "tcp",
    "udp",
]

NIC_MAC: Final = bytes.fromhex("525400123456")
CARD_MAC: Final = bytes.fromhex("02bca1000001")
NIC_IP: Final = IPv4Address("10.8.0.5").packed
GATEWAY: Final = IPv4Address("10.8.0.1").packed
METADATA_IP: Final = IPv4Address("169.254.169.254").packed
BROADCAST: Final = b"\xff" * 4
_TCP = struct.Struct("!HHIIBBHHH")

CONFIG: Final = NicConfig(
    mac="52:54:00:12:34:56",
    ip=IPv4Interface("10.8.0.5/24"),
    gateway=IPv4Address("10.8.0.1"),
    metadata=InstanceMetadata(
        instance_id="i-0123456789abcdef",
        hostname="web-1",
        local_ipv4="10.8.0.5",
        mac="52:54:00:12:34:56",
        public_keys=("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFuzz fuzz@card",),
        user_data=b"#cloud-config\nhostname: web-1\n",
    ),
    dns=(IPv4Address("10.8.0.2"), IPv4Address("1.1.1.1")),
    hostname="web-1",
    mtu=1450,
    card_mac="02:bc:a1:00:00:01",
)


class ServiceFailed(AssertionError):
    """A card service raised on a frame (``classify_tx`` logged and dropped it)."""


class BadReply(AssertionError):
    """The card sent the guest a frame that is not well formed."""


class _Failures(logging.Handler):
    """Keeps the exceptions the card logged, so the target can re-raise them."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


_FAILURES = _Failures()
logging.getLogger("offload").addHandler(_FAILURES)
logging.getLogger("offload").propagate = False  # the target reports; no stderr per input


def raise_logged_failures() -> None:
    """Re-raise the first exception the card logged since the last call, if any."""
    if _FAILURES.errors:
        first = _FAILURES.errors[0]
        _FAILURES.errors.clear()
        raise ServiceFailed(f"the card logged {type(first).__name__}: {first}") from first


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def eth(payload: bytes, ethertype: int = 0x0800, *, dst: bytes = CARD_MAC) -> bytes:
    return dst + NIC_MAC + ethertype.to_bytes(2, "big") + payload


def ipv4(payload: bytes, proto: int, *, src: bytes = NIC_IP, dst: bytes = METADATA_IP) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, proto, 0, src, dst
    )
    return header[:10] + _csum(header).to_bytes(2, "big") + header[12:] + payload


def udp(payload: bytes, *, sport: int, dport: int) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(*, sport: int, dport: int, seq: int, ack: int, flags: int, window: int = 65535,
        payload: bytes = b"", mss: int | None = None) -> bytes:  # fmt: skip
    options = b"" if mss is None else b"\x02\x04" + mss.to_bytes(2, "big")
    off = (20 + len(options)) // 4 << 4
    header = _TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, off, flags, window, 0, 0)
    return header + options + payload


def check_reply(frame: bytes) -> None:
    """Raise ``BadReply`` unless ``frame`` is a well-formed reply to the NIC."""
    if len(frame) < 14 or frame[0:6] != NIC_MAC or frame[6:12] != CARD_MAC:
        raise BadReply(f"reply not from the card to the NIC: {frame[:14].hex()}")
    ethertype = int.from_bytes(frame[12:14], "big")
    packet = frame[14:]
    if ethertype == 0x0806:
        if len(packet) != 28 or packet[:8] != bytes.fromhex("0001080006040002"):
            raise BadReply(f"ARP reply is not an ethernet/IPv4 reply: {packet[:8].hex()}")
        return
    if ethertype != 0x0800:
        raise BadReply(f"reply of ethertype {ethertype:#x}")
    if len(packet) < 20 or packet[0] != 0x45 or _csum(packet[:20]):
        raise BadReply("IPv4 header without options and a good checksum expected")
    total = int.from_bytes(packet[2:4], "big")
    if total != len(packet):
        raise BadReply(f"IPv4 total length {total} for {len(packet)} bytes")
    proto, src, dst, body = packet[9], packet[12:16], packet[16:20], packet[20:]
    pseudo = src + dst + bytes((0, proto)) + len(body).to_bytes(2, "big")
    if proto == 17:
        if len(body) < 8 or int.from_bytes(body[4:6], "big") != len(body):
            raise BadReply("UDP length does not match")
        if body[6:8] != b"\0\0" and _csum(pseudo + body):
            raise BadReply("bad UDP checksum")
    elif proto == 6:
        if len(body) < 20 or _csum(pseudo + body):
            raise BadReply("short TCP segment or bad TCP checksum")
    else:
        raise BadReply(f"reply of IP protocol {proto}")


class Nic:
    """Fresh card services for one NIC, with their replies collected and checked."""

    def __init__(self) -> None:
        self.services = NicServices(CONFIG, clock=lambda: 1000.0)
        self.replies: list[bytes] = []
        self.services.attach(self.replies.append)
        raise_logged_failures()

    def send(self, frame: bytes) -> TxVerdict:
        """One frame from the guest; returns the verdict, raises on a broken rule."""
        before = len(self.replies)
        verdict = self.services.classify_tx(bytearray(frame))
        raise_logged_failures()
        if self.services.internal_errors:
            raise ServiceFailed("internal_errors went up without a logged exception")
        for reply in self.replies[before:]:
            check_reply(reply)
        return verdict
