"""Ethernet, IPv4, UDP and TCP: defensive parsers and checksummed builders.

Parsers take bytes the guest wrote and return a frozen view or ``None``; they
never raise.  Every length field is checked against the bytes really present
before it is used: the IPv4 total length must cover the header and fit in the
frame (ethernet padding past it is cut off), the IHL must be 5..15 and fit,
the UDP length must be 8.. and fit, the TCP data offset must be 5.. and fit,
and TCP options are walked with a bound on every step.  Addresses stay as raw
``bytes`` (4 for IPv4, 6 for MACs): the hot path compares slices, never
builds ``ipaddress`` objects.

Builders compute every checksum (IPv4 header, UDP and TCP with the
pseudo-header).  The sum adds native-endian 16-bit words and swaps once at
the end (RFC 1071 section 2(B): the one's complement sum does not care about
byte order), which is much faster in Python than a word-by-word loop.
Received L4 checksums are *not* verified: a guest that negotiated checksum
offload leaves them partial, and the virtio ring does not corrupt bytes.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass

__all__ = [
    "BROADCAST_MAC",
    "ETHERTYPE_ARP",
    "ETHERTYPE_IPV4",
    "ETHERTYPE_IPV6",
    "ETH_HLEN",
    "IPPROTO_ICMP",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "TCP_ACK",
    "TCP_FIN",
    "TCP_PSH",
    "TCP_RST",
    "TCP_SYN",
    "VLAN_ETHERTYPES",
    "Ipv4Packet",
    "TcpSegment",
    "UdpDatagram",
    "build_ethernet",
    "build_ipv4",
    "build_tcp",
    "build_udp",
    "internet_checksum",
    "mac_bytes",
    "mac_text",
    "parse_ipv4",
    "parse_tcp",
    "parse_udp",
]

ETH_HLEN = 14
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_IPV6 = 0x86DD
VLAN_ETHERTYPES = frozenset({0x8100, 0x88A8, 0x9100})
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
BROADCAST_MAC = b"\xff" * 6

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10

_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_UDP_HEADER = struct.Struct("!HHHH")
_TCP_HEADER = struct.Struct("!HHIIBBHHH")
_SWAP = sys.byteorder == "little"


def mac_bytes(text: str) -> bytes:
    """``"aa:bb:cc:dd:ee:ff"`` -> 6 bytes; ``ValueError`` for anything else."""
    parts = text.split(":")
    if len(parts) != 6 or any(len(p) != 2 for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def internet_checksum(*parts: bytes) -> int:
    """The RFC 1071 checksum of the concatenated parts (each but the last even-sized)."""
    data = b"".join(parts)
    if len(data) & 1:
        data += b"\x00"
    total = sum(memoryview(data).cast("H"))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    if _SWAP:
        total = ((total & 0xFF) << 8) | (total >> 8)
    return ~total & 0xFFFF


@dataclass(frozen=True, slots=True)
class Ipv4Packet:
    src: bytes
    dst: bytes
    proto: int
    ttl: int
    offset: int  # fragment offset in bytes
    more_fragments: bool
    payload: bytes

    @property
    def fragment(self) -> bool:
        return self.more_fragments or self.offset != 0


def parse_ipv4(data: bytes) -> Ipv4Packet | None:
    """The IPv4 packet at the start of *data* (an ethernet payload), or ``None``."""
    if len(data) < 20:
        return None
    vihl, _tos, total, _ident, frag, ttl, proto, _csum, src, dst = _IPV4_HEADER.unpack_from(data)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20 or total < ihl or total > len(data):
        return None
    offset, more = (frag & 0x1FFF) * 8, bool(frag & 0x2000)
    return Ipv4Packet(src, dst, proto, ttl, offset, more, bytes(data[ihl:total]))


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    sport: int
    dport: int
    payload: bytes


def parse_udp(data: bytes) -> UdpDatagram | None:
    if len(data) < 8:
        return None
    sport, dport, length, _csum = _UDP_HEADER.unpack_from(data)
    if length < 8 or length > len(data):
        return None
    return UdpDatagram(sport, dport, bytes(data[8:length]))


@dataclass(frozen=True, slots=True)
class TcpSegment:
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    mss: int | None
    payload: bytes


def _tcp_mss(options: bytes) -> int | None:
    """The MSS option's value, walking the options with a bound on every step."""
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:  # end of options
            return None
        if kind == 1:  # no-op
            i += 1
            continue
        if i + 1 >= len(options):
            return None
        length = options[i + 1]
        if length < 2 or i + length > len(options):
            return None
        if kind == 2 and length == 4:
            return int.from_bytes(options[i + 2 : i + 4], "big")
        i += length
    return None


def parse_tcp(data: bytes) -> TcpSegment | None:
    if len(data) < 20:
        return None
    sport, dport, seq, ack, off, flags, window, _csum, _urg = _TCP_HEADER.unpack_from(data)
    hlen = (off >> 4) * 4
    if hlen < 20 or hlen > len(data):
        return None
    mss = _tcp_mss(bytes(data[20:hlen])) if hlen > 20 else None
    return TcpSegment(sport, dport, seq, ack, flags & 0x3F, window, mss, bytes(data[hlen:]))


def build_ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return dst + src + ethertype.to_bytes(2, "big") + payload


def build_ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, *, ttl: int = 64) -> bytes:
    """An IPv4 packet with DF set, no options, and its header checksum."""
    total = 20 + len(payload)
    header = _IPV4_HEADER.pack(0x45, 0, total, 0, 0x4000, ttl, proto, 0, src, dst)
    csum = internet_checksum(header)
    return header[:10] + csum.to_bytes(2, "big") + header[12:] + payload


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    return src + dst + bytes((0, proto)) + length.to_bytes(2, "big")


def build_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP datagram (header + payload) whose checksum covers the pseudo-header."""
    length = 8 + len(payload)
    header = _UDP_HEADER.pack(sport, dport, length, 0)
    csum = internet_checksum(_pseudo(src, dst, IPPROTO_UDP, length), header, payload) or 0xFFFF
    return header[:6] + csum.to_bytes(2, "big") + payload


def build_tcp(
    src: bytes,
    dst: bytes,
    *,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    payload: bytes = b"",
    mss: int | None = None,
) -> bytes:
    """A TCP segment (header + payload); *mss* adds the MSS option (SYN only)."""
    options = b"" if mss is None else b"\x02\x04" + mss.to_bytes(2, "big")
    hlen = 20 + len(options)
    header = _TCP_HEADER.pack(
        sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (hlen // 4) << 4, flags, window, 0, 0
    )
    header += options
    length = hlen + len(payload)
    csum = internet_checksum(_pseudo(src, dst, IPPROTO_TCP, length), header, payload)
    return header[:16] + csum.to_bytes(2, "big") + header[18:] + payload
