"""IPv6 and Neighbor Discovery: defensive parsers, and the link-local address of a MAC.

``parse_ipv6`` reads the fixed header and walks the extension headers to
the upper-layer protocol, with a bound on every step: the payload length
must fit in the frame (ethernet padding past it is cut off; a jumbogram,
payload length 0 behind a hop-by-hop header, is refused), at most
``MAX_EXTENSIONS`` extension headers, each of whose length must fit.
Hop-by-hop, routing and destination options count their length in 8-byte
units after the first 8, the authentication header in 4-byte units after
the first 8, a fragment header is 8 bytes.  A non-first fragment has no
upper-layer header: its ``proto`` is ``None``.  Anything that does not
hold together parses to ``None``; the parsers never raise.

``parse_nd`` reads an ICMPv6 Neighbor Discovery message (RFC 4861: router
solicitation and advertisement, neighbour solicitation and advertisement,
redirect): its fixed part by type, its target address where it has one, and
every link-layer address option (source, type 1; target, type 2).  An
option of length 0 or running past the message makes the whole message
``None``, as RFC 4861 section 4.6 asks of a receiver.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ICMPV6_NA",
    "ICMPV6_NS",
    "ICMPV6_RA",
    "ICMPV6_REDIRECT",
    "ICMPV6_RS",
    "IPPROTO_ICMPV6",
    "MAX_EXTENSIONS",
    "ND_TYPES",
    "Ipv6Packet",
    "NdMessage",
    "link_local",
    "parse_ipv6",
    "parse_nd",
]

IPPROTO_ICMPV6 = 58
ICMPV6_RS = 133
ICMPV6_RA = 134
ICMPV6_NS = 135
ICMPV6_NA = 136
ICMPV6_REDIRECT = 137
#: the fixed part of each ND message (ICMPv6 header included)
_ND_FIXED = {ICMPV6_RS: 8, ICMPV6_RA: 16, ICMPV6_NS: 24, ICMPV6_NA: 24, ICMPV6_REDIRECT: 40}
ND_TYPES = frozenset(_ND_FIXED)
MAX_EXTENSIONS = 8
_OPTIONS_LIKE = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
_FRAGMENT = 44
_AH = 51


@dataclass(frozen=True, slots=True)
class Ipv6Packet:
    src: bytes
    dst: bytes
    hop_limit: int
    #: the upper-layer protocol; None in a non-first fragment
    proto: int | None
    fragmented: bool
    #: the upper-layer bytes (after every extension header)
    payload: bytes


def parse_ipv6(data: bytes) -> Ipv6Packet | None:
    """The IPv6 packet at the start of *data* (an ethernet payload), or ``None``."""
    if len(data) < 40 or data[0] >> 4 != 6:
        return None
    length = int.from_bytes(data[4:6], "big")
    if 40 + length > len(data):
        return None
    nh, src, dst, hop_limit = data[6], bytes(data[8:24]), bytes(data[24:40]), data[7]
    if length == 0 and nh == 0:
        return None  # a jumbogram (RFC 2675): never on our links
    body = bytes(data[40 : 40 + length])
    off = 0
    fragmented = False
    for _ in range(MAX_EXTENSIONS + 1):
        if nh in _OPTIONS_LIKE or nh == _AH:
            if off + 2 > len(body):
                return None
            unit, extra = (4, 2) if nh == _AH else (8, 1)
            size = (body[off + 1] + extra) * unit
            if off + size > len(body):
                return None
            nh, off = body[off], off + size
        elif nh == _FRAGMENT:
            if off + 8 > len(body):
                return None
            fragmented = True
            first = int.from_bytes(body[off + 2 : off + 4], "big") >> 3 == 0
            nh, off = body[off], off + 8
            if not first:
                return Ipv6Packet(src, dst, hop_limit, None, True, body[off:])
        else:
            return Ipv6Packet(src, dst, hop_limit, nh, fragmented, body[off:])
    return None  # more extension headers than anyone needs


@dataclass(frozen=True, slots=True)
class NdMessage:
    type: int
    #: the target address of NS, NA and redirect; None for RS and RA
    target: bytes | None
    #: every source and target link-layer address option (the first 6 bytes of each)
    lladdrs: tuple[bytes, ...]


def parse_nd(icmp: bytes) -> NdMessage | None:
    """The ND message in an ICMPv6 payload, or ``None`` (not ND, or malformed)."""
    if not icmp:
        return None
    fixed = _ND_FIXED.get(icmp[0])
    if fixed is None or len(icmp) < fixed:
        return None
    target = bytes(icmp[8:24]) if icmp[0] in (ICMPV6_NS, ICMPV6_NA, ICMPV6_REDIRECT) else None
    lladdrs: list[bytes] = []
    i = fixed
    while i < len(icmp):
        if i + 2 > len(icmp):
            return None
        size = icmp[i + 1] * 8
        if size == 0 or i + size > len(icmp):
            return None
        if icmp[i] in (1, 2):  # source / target link-layer address
            lladdrs.append(bytes(icmp[i + 2 : i + 8]))
        i += size
    return NdMessage(icmp[0], target, tuple(lladdrs))


def link_local(mac: bytes) -> bytes:
    """fe80::/64 with the modified EUI-64 interface id of *mac* (RFC 4291 appendix A)."""
    eui = bytes((mac[0] ^ 0x02, mac[1], mac[2], 0xFF, 0xFE, mac[3], mac[4], mac[5]))
    return b"\xfe\x80" + bytes(6) + eui
