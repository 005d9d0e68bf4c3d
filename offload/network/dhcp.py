"""The card's DHCP server for one NIC: parse a client message, decide, build the reply.

There is exactly one lease per NIC (its VPC address), so the server keeps no
state: DISCOVER gets an OFFER of that address, REQUEST gets an ACK when the
address it asks for (option 50, or ``ciaddr`` when renewing) is the NIC's and
a NAK otherwise, INFORM gets an ACK without a lease, RELEASE and DECLINE get
nothing.  A REQUEST naming another server (option 54) is not ours to answer.
Messages whose ``chaddr`` is not the NIC's MAC are ignored: the card speaks
for one identity only.

Parsing is defensive: the fixed BOOTP header must be there with op 1,
ethernet addresses and the magic cookie, and the options are walked with a
bound on every length byte; a truncated or garbled option list ends the walk
(what was read before it still counts, like ISC dhcpd), and a message without
a valid type (option 53) is ignored.  Option overload (52) is not honoured.

Replies go to the client's MAC; the IP destination is the client's address
when it is renewing that address without the broadcast flag, the broadcast
address otherwise (and for every NAK).  A client without an address reads
its replies from a raw socket, so a broadcast IP in a unicast frame reaches
every client; the reply never names any address but the NIC's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

__all__ = [
    "ACK",
    "DECLINE",
    "DISCOVER",
    "INFORM",
    "NAK",
    "OFFER",
    "RELEASE",
    "REQUEST",
    "DhcpLease",
    "DhcpMessage",
    "DhcpReply",
    "answer",
    "parse_dhcp",
]

DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
MAGIC = b"\x63\x82\x53\x63"
BROADCAST_FLAG = 0x8000
_BOOTP = struct.Struct("!BBBBIHH4s4s4s4s16s")  # up to chaddr: 44 bytes
_FIXED = 236  # BOOTP header incl. sname and file
_MIN_REPLY = 300


@dataclass(frozen=True, slots=True)
class DhcpMessage:
    xid: int
    flags: int
    ciaddr: bytes
    giaddr: bytes
    chaddr: bytes
    msg_type: int
    requested_ip: bytes | None
    server_id: bytes | None


def _options(data: bytes) -> dict[int, bytes]:
    """Options as {code: value}, first occurrence wins; a bad length ends the walk."""
    found: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        code = data[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        if i + 1 >= len(data):
            break
        length = data[i + 1]
        if i + 2 + length > len(data):
            break
        found.setdefault(code, bytes(data[i + 2 : i + 2 + length]))
        i += 2 + length
    return found


def parse_dhcp(data: bytes) -> DhcpMessage | None:
    """A client's DHCP message (UDP payload), or ``None`` if it is not one we answer."""
    if len(data) < _FIXED + 4 or data[_FIXED : _FIXED + 4] != MAGIC:
        return None
    op, htype, hlen, _hops, xid, _secs, flags, ciaddr, _yi, _si, giaddr, chaddr = (
        _BOOTP.unpack_from(data)
    )
    if op != 1 or htype != 1 or hlen != 6:
        return None
    opts = _options(data[_FIXED + 4 :])
    mtype = opts.get(53, b"")
    if len(mtype) != 1:
        return None
    requested = opts.get(50)
    server = opts.get(54)
    return DhcpMessage(
        xid=xid,
        flags=flags,
        ciaddr=ciaddr,
        giaddr=giaddr,
        chaddr=chaddr[:6],
        msg_type=mtype[0],
        requested_ip=requested if requested is not None and len(requested) == 4 else None,
        server_id=server if server is not None and len(server) == 4 else None,
    )


@dataclass(frozen=True, slots=True)
class DhcpLease:
    """What the card hands out for one NIC; ``server`` is the card's address."""

    mac: bytes
    address: IPv4Interface
    server: IPv4Address
    router: IPv4Address | None
    dns: tuple[IPv4Address, ...]
    hostname: str
    mtu: int
    lease_seconds: int


@dataclass(frozen=True, slots=True)
class DhcpReply:
    payload: bytes
    dst_ip: bytes  # 255.255.255.255 or the client's address


def _opt(code: int, value: bytes) -> bytes:
    return bytes((code, len(value))) + value


def _lease_options(lease: DhcpLease, *, with_lease: bool) -> bytes:
    net = lease.address.network
    out = _opt(1, net.netmask.packed)
    if net.prefixlen <= 30:
        out += _opt(28, net.broadcast_address.packed)
    if lease.router is not None:
        out += _opt(3, lease.router.packed)
    if lease.dns:
        out += _opt(6, b"".join(a.packed for a in lease.dns[:63]))
    if lease.hostname:
        out += _opt(12, lease.hostname.encode("ascii"))
    out += _opt(26, lease.mtu.to_bytes(2, "big"))
    if with_lease:
        t = lease.lease_seconds
        out += _opt(51, t.to_bytes(4, "big"))
        out += _opt(58, (t // 2).to_bytes(4, "big"))
        out += _opt(59, (t * 7 // 8).to_bytes(4, "big"))
    return out


def _build(msg: DhcpMessage, mtype: int, *, yiaddr: bytes, ciaddr: bytes, opts: bytes) -> bytes:
    header = _BOOTP.pack(
        2, 1, 6, 0, msg.xid, 0, msg.flags, ciaddr, yiaddr, bytes(4), msg.giaddr, msg.chaddr
    )
    body = header + bytes(_FIXED - len(header)) + MAGIC + _opt(53, bytes((mtype,))) + opts
    body += b"\xff"
    return body + bytes(max(0, _MIN_REPLY - len(body)))


def answer(msg: DhcpMessage, lease: DhcpLease) -> DhcpReply | None:
    """The reply to *msg* for *lease*, or ``None`` when the card stays silent."""
    if msg.chaddr != lease.mac:
        return None
    ours = lease.address.ip.packed
    server = _opt(54, lease.server.packed)
    bcast = b"\xff" * 4
    zero = bytes(4)
    renewing = msg.ciaddr == ours and not msg.flags & BROADCAST_FLAG
    to_client = ours if renewing else bcast
    if msg.msg_type == DISCOVER:
        opts = server + _lease_options(lease, with_lease=True)
        return DhcpReply(_build(msg, OFFER, yiaddr=ours, ciaddr=zero, opts=opts), to_client)
    if msg.msg_type == REQUEST:
        if msg.server_id is not None and msg.server_id != lease.server.packed:
            return None  # the client chose another server
        wanted = msg.requested_ip if msg.requested_ip is not None else msg.ciaddr
        if wanted != ours:
            return DhcpReply(_build(msg, NAK, yiaddr=zero, ciaddr=zero, opts=server), bcast)
        opts = server + _lease_options(lease, with_lease=True)
        ciaddr = msg.ciaddr if msg.ciaddr == ours else zero
        return DhcpReply(_build(msg, ACK, yiaddr=ours, ciaddr=ciaddr, opts=opts), to_client)
    if msg.msg_type == INFORM:
        if msg.ciaddr != ours:
            return None
        opts = server + _lease_options(lease, with_lease=False)
        return DhcpReply(_build(msg, ACK, yiaddr=zero, ciaddr=msg.ciaddr, opts=opts), ours)
    return None
