"""The VPC's DNS, answered by the card on the gateway address (sans-I/O).

DHCP hands out the gateway as the only resolver (option 6).  ``VpcZone``
holds the VPC directory's names; ``answer(query_bytes, zone)`` returns the
reply bytes, or None when nothing should be sent:

* ``<hostname>.<vpc>.internal`` A -> the interface's address (``hostname``
  is the instance's, ``vpc`` the VPC's id: ``i1234.vpc-a.internal``);
  several interfaces of one instance give several A records;
* ``d.c.b.a.in-addr.arpa`` PTR, for an address of the directory -> its
  name; for another address inside one of the VPC's subnets -> NXDOMAIN;
* a name in the zone with no such record type (AAAA, MX, ...) -> NOERROR
  with no answer; a name under the zone that does not exist -> NXDOMAIN;
  the zone apex itself answers NOERROR with no answer;
* everything else -> REFUSED.  The card has no upstream resolver and
  forwards nothing: a name outside the VPC is never looked up anywhere.

Answers carry AA, RD copied, RA clear, TTL 30 s.  Parsing is defensive:
the header must be a standard query (QR=0, opcode 0, TC=0) with exactly one
question and no answer or authority records (additional records, such as an
EDNS OPT, are ignored); the question name is at most 255 bytes in labels of
1..63, without compression pointers.  A message that fails these checks
gets FORMERR if its header could be read and is a query, and nothing at all
if it is shorter than a header or is itself a response (never answer an
answer: no loops, no reflection).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

__all__ = [
    "CLASS_IN",
    "NOERROR",
    "NXDOMAIN",
    "REFUSED",
    "TYPE_A",
    "TYPE_PTR",
    "DnsQuery",
    "VpcZone",
    "answer",
    "parse_query",
]

TYPE_A = 1
TYPE_PTR = 12
CLASS_IN = 1
NOERROR, FORMERR, NXDOMAIN, REFUSED = 0, 1, 3, 5
TTL = 30
MAX_NAME = 255
_HEADER = struct.Struct("!HHHHHH")
_ARPA = ("in-addr", "arpa")


@dataclass(frozen=True, slots=True)
class DnsQuery:
    ident: int
    flags: int
    #: the question name's labels, lowercased
    labels: tuple[str, ...]
    qtype: int
    qclass: int
    #: the question as it was sent (echoed in the reply)
    question: bytes


class VpcZone:
    """The names of one VPC: ``<hostname>.<vpc>.internal`` and their reverse."""

    def __init__(
        self,
        vpc: str,
        entries: Iterable[tuple[str, IPv4Address]],
        subnets: Iterable[IPv4Network] = (),
    ) -> None:
        self.apex = (vpc.lower(), "internal")
        self.forward: dict[str, list[IPv4Address]] = {}
        self.reverse: dict[IPv4Address, str] = {}
        for hostname, ip in entries:
            if not hostname:
                continue
            name = hostname.lower()
            self.forward.setdefault(name, []).append(ip)
            self.reverse.setdefault(ip, name)
        self.subnets = tuple(subnets)

    def fqdn(self, hostname: str) -> tuple[str, ...]:
        return (hostname, *self.apex)


def parse_query(data: bytes) -> DnsQuery | int | None:
    """A standard query; an rcode (FORMERR) for a bad query; None: send nothing."""
    if len(data) < _HEADER.size:
        return None
    ident, flags, qd, an, ns, _ar = _HEADER.unpack_from(data)
    if flags & 0x8000:  # a response
        return None
    if flags & 0x7800 or flags & 0x0200 or qd != 1 or an or ns:  # opcode, TC, counts
        return FORMERR
    labels: list[str] = []
    pos = _HEADER.size
    length = 0
    while True:
        if pos >= len(data):
            return FORMERR
        size = data[pos]
        pos += 1
        if size == 0:
            break
        if size > 63:  # 0xC0: a compression pointer, 0x40/0x80: reserved
            return FORMERR
        length += size + 1
        if length + 1 > MAX_NAME or pos + size > len(data):
            return FORMERR
        try:
            labels.append(data[pos : pos + size].decode("ascii").lower())
        except UnicodeDecodeError:
            return FORMERR
        pos += size
    if pos + 4 > len(data):
        return FORMERR
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    return DnsQuery(
        ident=ident,
        flags=flags,
        labels=tuple(labels),
        qtype=qtype,
        qclass=qclass,
        question=data[_HEADER.size : pos + 4],
    )


def _name(labels: Iterable[str]) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode("ascii") for p in labels) + b"\0"


def _reply(query: DnsQuery, rcode: int, answers: list[bytes]) -> bytes:
    flags = 0x8000 | 0x0400 | (query.flags & 0x0100) | rcode  # QR, AA, RD copied
    header = _HEADER.pack(query.ident, flags, 1, len(answers), 0, 0)
    return header + query.question + b"".join(answers)


def _record(rtype: int, rdata: bytes) -> bytes:
    # the owner is the question's name: a pointer to offset 12
    return struct.pack("!HHHIH", 0xC00C, rtype, CLASS_IN, TTL, len(rdata)) + rdata


def _reverse_address(labels: tuple[str, ...]) -> IPv4Address | None:
    if len(labels) != 6 or labels[4:] != _ARPA:
        return None
    octets = labels[3::-1]
    if not all(o.isdigit() and len(o) <= 3 and int(o) <= 255 and str(int(o)) == o for o in octets):
        return None
    return IPv4Address(".".join(octets))


def answer(data: bytes, zone: VpcZone) -> bytes | None:
    """The reply to the DNS message *data* (see the module docstring), or None."""
    parsed = parse_query(data)
    if parsed is None:
        return None
    if isinstance(parsed, int):
        ident, flags = _HEADER.unpack_from(data)[:2]
        return _HEADER.pack(ident, 0x8000 | (flags & 0x0100) | parsed, 0, 0, 0, 0)
    query = parsed
    labels = query.labels
    if query.qclass != CLASS_IN:
        return _reply(query, REFUSED, [])
    if labels[-2:] == zone.apex:
        host = labels[:-2]
        if not host:
            return _reply(query, NOERROR, [])
        ips = zone.forward.get(host[0]) if len(host) == 1 else None
        if ips is None:
            return _reply(query, NXDOMAIN, [])
        if query.qtype != TYPE_A:
            return _reply(query, NOERROR, [])
        return _reply(query, NOERROR, [_record(TYPE_A, ip.packed) for ip in ips])
    address = _reverse_address(labels)
    if address is not None:
        name = zone.reverse.get(address)
        if name is not None:
            if query.qtype != TYPE_PTR:
                return _reply(query, NOERROR, [])
            return _reply(query, NOERROR, [_record(TYPE_PTR, _name(zone.fqdn(name)))])
        if any(address in net for net in zone.subnets):
            return _reply(query, NXDOMAIN, [])
    return _reply(query, REFUSED, [])
