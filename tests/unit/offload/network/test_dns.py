"""The VPC's DNS on the card: names of the directory, REFUSED for the rest,
and hostile messages answered FORMERR or not at all."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv4Network

from hypothesis import given
from hypothesis import strategies as st

from offload.network.dns import (
    NOERROR,
    NXDOMAIN,
    REFUSED,
    TYPE_A,
    TYPE_PTR,
    VpcZone,
    answer,
    parse_query,
)
from offload.network.hook import TxVerdict
from offload.network.router import Neighbor, VpcDirectory
from offload.network.services import NicServices

from .guest import CARD_MAC, GATEWAY, NIC_IP, NIC_MAC, decode, eth, ipv4, nic_config, udp

ZONE = VpcZone(
    "vpc-a",
    [("web-1", IPv4Address("10.8.0.5")), ("db-1", IPv4Address("10.8.1.7"))],
    [IPv4Network("10.8.0.0/24"), IPv4Network("10.8.1.0/24")],
)


def query(name: str, qtype: int = TYPE_A, *, ident: int = 0x1234, flags: int = 0x0100) -> bytes:
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"
    return (
        struct.pack("!HHHHHH", ident, flags, 1, 0, 0, 0) + question + struct.pack("!HH", qtype, 1)
    )


def rcode_and_answers(reply: bytes | None) -> tuple[int, int]:
    assert reply is not None
    ident, flags, qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", reply)
    assert ident == 0x1234 and flags & 0x8000 and qd == 1
    return flags & 0xF, an


def formerr(reply: bytes | None) -> bool:
    """A FORMERR reply: the header alone, the query's id."""
    assert reply is not None and len(reply) == 12
    return reply[:2] == b"\x12\x34" and reply[2] & 0x80 != 0 and reply[3] & 0xF == 1


def test_a_record_of_an_instance() -> None:
    reply = answer(query("DB-1.vpc-a.internal"), ZONE)
    assert rcode_and_answers(reply) == (NOERROR, 1)
    assert reply is not None and reply.endswith(IPv4Address("10.8.1.7").packed)
    assert struct.unpack_from("!H", reply, 2)[0] & 0x0400  # authoritative
    assert struct.unpack_from("!H", reply, 2)[0] & 0x0100  # RD echoed


def test_ptr_record_of_an_instance() -> None:
    reply = answer(query("7.1.8.10.in-addr.arpa", TYPE_PTR), ZONE)
    assert rcode_and_answers(reply) == (NOERROR, 1)
    assert reply is not None and reply.endswith(b"\x04db-1\x05vpc-a\x08internal\x00")


def test_names_that_do_not_exist_and_other_types() -> None:
    assert rcode_and_answers(answer(query("nope.vpc-a.internal"), ZONE)) == (NXDOMAIN, 0)
    assert rcode_and_answers(answer(query("a.web-1.vpc-a.internal"), ZONE)) == (NXDOMAIN, 0)
    assert rcode_and_answers(answer(query("web-1.vpc-a.internal", 28), ZONE)) == (NOERROR, 0)
    assert rcode_and_answers(answer(query("vpc-a.internal"), ZONE)) == (NOERROR, 0)
    # an address of the VPC's subnets nobody holds: NXDOMAIN; outside: REFUSED
    assert rcode_and_answers(answer(query("9.0.8.10.in-addr.arpa", TYPE_PTR), ZONE)) == (
        NXDOMAIN,
        0,
    )
    assert rcode_and_answers(answer(query("1.1.1.1.in-addr.arpa", TYPE_PTR), ZONE)) == (
        REFUSED,
        0,
    )


def test_everything_else_is_refused_never_forwarded() -> None:
    for name in ("example.com", "web-1.vpc-b.internal", "internal", "x.in-addr.arpa"):
        assert rcode_and_answers(answer(query(name), ZONE)) == (REFUSED, 0), name


def test_hostile_messages() -> None:
    assert answer(b"\x12\x34", ZONE) is None  # shorter than a header
    response = query("web-1.vpc-a.internal", flags=0x8100)
    assert answer(response, ZONE) is None  # never answer an answer
    pointer = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + b"\0\1\0\1"
    assert formerr(answer(pointer, ZONE))  # FORMERR
    long_name = ".".join(["a" * 63] * 4) + ".vpc-a.internal"
    assert parse_query(query(long_name)) == 1
    assert formerr(answer(query("web-1.vpc-a.internal")[:-2], ZONE))
    two = bytearray(query("web-1.vpc-a.internal"))
    two[5] = 2  # QDCOUNT 2
    assert formerr(answer(bytes(two), ZONE))


@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    reply = answer(data, ZONE)
    if reply is not None:
        assert len(reply) >= 12 and reply[2] & 0x80  # a response
        assert reply[:2] == data[:2]


@given(
    st.lists(st.binary(min_size=0, max_size=70), max_size=8),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
)
def test_arbitrary_questions_never_raise(labels: list[bytes], qtype: int, flags: int) -> None:
    question = b"".join(bytes([len(x) & 0xFF]) + x for x in labels) + b"\0"
    data = struct.pack("!HHHHHH", 1, flags, 1, 0, 0, 0) + question + struct.pack("!HH", qtype, 1)
    reply = answer(data, ZONE)
    assert reply is None or reply[2] & 0x80


def test_the_nic_answers_dns_on_the_gateway() -> None:
    svc = NicServices(nic_config())
    sent: list[bytes] = []
    svc.attach(sent.append)
    frame = eth(
        ipv4(udp(query("web-1.vpc-a.internal"), sport=40000, dport=53), 17, dst=GATEWAY.packed)
    )
    # no directory yet: consumed, unanswered
    assert svc.classify_tx(bytearray(frame)) is TxVerdict.CONSUMED and sent == []
    svc.set_directory(
        VpcDirectory(
            "vpc-a",
            (Neighbor(NIC_IP, "52:54:00:12:34:56", IPv4Network("10.8.0.0/24"), "web-1"),),
        )
    )
    assert svc.classify_tx(bytearray(frame)) is TxVerdict.CONSUMED
    (reply,) = map(decode, sent)
    assert (reply.dst_mac, reply.src_mac) == (NIC_MAC, CARD_MAC)
    assert (reply.src_ip, reply.sport, reply.dport) == (GATEWAY.packed, 53, 40000)
    assert reply.payload.endswith(NIC_IP.packed)


def test_dhcp_names_the_gateway_as_resolver_when_configured() -> None:
    from .guest import dhcp_frame, dhcp_options

    svc = NicServices(nic_config(dns=(GATEWAY,)))
    sent: list[bytes] = []
    svc.attach(sent.append)
    svc.classify_tx(bytearray(dhcp_frame(1, xid=5)))
    (offer,) = map(decode, sent)
    assert dhcp_options(offer.payload)[6] == GATEWAY.packed
