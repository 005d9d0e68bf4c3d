"""DHCP decisions on parsed messages, and option walks over garbage."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface

from hypothesis import given
from hypothesis import strategies as st

from offload.network import dhcp

from .guest import NIC_MAC, dhcp_options, dhcp_payload

LEASE = dhcp.DhcpLease(
    mac=NIC_MAC,
    address=IPv4Interface("10.1.2.3/16"),
    server=IPv4Address("10.1.0.1"),
    router=IPv4Address("10.1.0.1"),
    dns=(),
    hostname="",
    mtu=1500,
    lease_seconds=3600,
)
HEADER = dhcp_payload(1)[:240]


@given(st.binary(max_size=300))
def test_garbage_options_never_raise(options: bytes) -> None:
    msg = dhcp.parse_dhcp(HEADER + options)
    if msg is not None:
        reply = dhcp.answer(msg, LEASE)
        assert reply is None or reply.dst_ip in (b"\xff" * 4, LEASE.address.ip.packed)


@given(st.binary(max_size=400))
def test_garbage_messages_never_raise(data: bytes) -> None:
    dhcp.parse_dhcp(data)


def test_truncated_option_ends_the_walk_but_keeps_what_came_before() -> None:
    msg = dhcp.parse_dhcp(HEADER + bytes((53, 1, 3, 50, 4, 10, 1)))
    assert msg is not None and msg.msg_type == 3 and msg.requested_ip is None
    assert dhcp.parse_dhcp(HEADER + bytes((50, 4, 10, 1, 2, 3))) is None  # no type
    assert dhcp.parse_dhcp(HEADER[:239]) is None
    assert dhcp.parse_dhcp(b"\x02" + HEADER[1:] + bytes((53, 1, 1))) is None  # a reply


def test_inform_and_decline() -> None:
    inform = dhcp.parse_dhcp(dhcp_payload(8, ciaddr=LEASE.address.ip.packed))
    assert inform is not None
    reply = dhcp.answer(inform, LEASE)
    assert reply is not None and reply.dst_ip == LEASE.address.ip.packed
    opts = dhcp_options(reply.payload)
    assert opts[53] == b"\x05" and 51 not in opts and opts[1] == b"\xff\xff\x00\x00"
    decline = dhcp.parse_dhcp(dhcp_payload(4))
    assert decline is not None and dhcp.answer(decline, LEASE) is None


def test_no_router_no_dns() -> None:
    msg = dhcp.parse_dhcp(dhcp_payload(1))
    assert msg is not None
    reply = dhcp.answer(msg, replace(LEASE, router=None))
    assert reply is not None and 3 not in dhcp_options(reply.payload)
    assert len(reply.payload) >= 300
