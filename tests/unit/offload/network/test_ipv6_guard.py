"""Ipv6Guard: the NIC's addresses, link-local, NDP spoofing, router messages, no IPv6 at all."""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offload.network.ipv6 import parse_ipv6, parse_nd
from offload.network.ipv6_guard import REASONS, Ipv6Guard

from .guest import (
    ALL_NODES,
    NIC_IP6,
    NIC_LL6,
    NIC_MAC,
    PEER_IP6,
    ext,
    frag,
    ipv6,
    lladdr_option,
    nd,
)

GUARD = Ipv6Guard(NIC_MAC, [NIC_IP6])
OTHER_MAC = bytes.fromhex("525400999999")
UNSPEC = IPv6Address("::")
SOLICITED = IPv6Address("ff02::1:ff00:5")
UDP = b"\x30\x39\x00\x35\x00\x0c\x00\x00ping"


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        # sources
        (ipv6(UDP, 17), None),
        (ipv6(UDP, 17, src=NIC_LL6, dst=IPv6Address("fe80::1")), None),
        (ipv6(UDP, 17, src=PEER_IP6), "ipv6_src"),
        (ipv6(UDP, 17, src=IPv6Address("fe80::5054:ff:fe12:3457")), "ipv6_src"),
        (ipv6(UDP, 17, src=IPv6Address("ff02::1")), "ipv6_src"),
        (ipv6(UDP, 17, src=UNSPEC), "ipv6_src"),
        (ipv6(b"\x80\0\0\0\0\0\0\0", src=UNSPEC), "ipv6_src"),  # echo from ::
        (ipv6(UDP[:-1], 17)[:-2], "ipv6_malformed"),
        # what a host sends before it has an address
        (ipv6(nd(135, NIC_IP6), src=UNSPEC, dst=SOLICITED), None),  # DAD
        (ipv6(nd(135, PEER_IP6), src=UNSPEC, dst=SOLICITED), "ndp_target"),  # DAD for another
        (ipv6(nd(133), src=UNSPEC), None),
        (ipv6(b"\x8f" + bytes(7), src=UNSPEC, dst=IPv6Address("ff02::16")), None),  # MLDv2
        # neighbour solicitation: may ask for anyone, its link-layer option must be ours
        (ipv6(nd(135, PEER_IP6, lladdr_option(1))), None),
        (ipv6(nd(135, PEER_IP6, lladdr_option(1, OTHER_MAC))), "ndp_lladdr"),
        (ipv6(nd(135, PEER_IP6, lladdr_option(1), lladdr_option(1, OTHER_MAC))), "ndp_lladdr"),
        # neighbour advertisement: only for the NIC's addresses, with its MAC
        (ipv6(nd(136, NIC_IP6, lladdr_option(2)), dst=ALL_NODES), None),
        (ipv6(nd(136, NIC_LL6, lladdr_option(2)), src=NIC_LL6), None),
        (ipv6(nd(136, PEER_IP6, lladdr_option(2))), "ndp_target"),
        (ipv6(nd(136, NIC_IP6, lladdr_option(2, OTHER_MAC))), "ndp_lladdr"),
        (ipv6(nd(136, NIC_IP6), src=UNSPEC), "ipv6_src"),
        (ipv6(ext(58) + nd(136, PEER_IP6), 60), "ndp_target"),  # behind a destination option
        (ipv6(frag(58) + nd(136, NIC_IP6), 44), "ndp_fragmented"),
        (ipv6(nd(136, NIC_IP6, bytes((2, 0)) + NIC_MAC)), "ipv6_malformed"),
        # a guest is no router
        (ipv6(nd(134)), "ndp_router"),
        (ipv6(nd(137, PEER_IP6)), "ndp_router"),
        (ipv6(nd(134), src=NIC_LL6), "ndp_router"),
    ],
)
def test_check(packet: bytes, reason: str | None) -> None:
    assert GUARD.check(packet) == reason


def test_no_address_no_ipv6() -> None:
    guard = Ipv6Guard(NIC_MAC, [])
    assert not guard.enabled and not guard.addresses
    assert guard.check(ipv6(UDP, 17, src=NIC_LL6)) == "ipv6_disabled"  # not even link-local
    assert guard.check(b"") == "ipv6_disabled"


def test_addresses_include_link_local() -> None:
    assert GUARD.addresses == {NIC_IP6.packed, NIC_LL6.packed}


@given(
    st.sampled_from(
        [
            ipv6(nd(136, NIC_IP6, lladdr_option(2)), dst=ALL_NODES),
            ipv6(nd(135, PEER_IP6, lladdr_option(1))),
            ipv6(nd(135, NIC_IP6), src=UNSPEC, dst=SOLICITED),
            ipv6(ext(58) + nd(136, NIC_IP6, lladdr_option(2)), 60),
            ipv6(UDP, 17),
        ]
    ),
    st.lists(st.tuples(st.integers(0, 110), st.integers(0, 255)), max_size=4),
)
def test_nothing_forwarded_speaks_for_anyone_else(
    seed: bytes, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(seed)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    reason = GUARD.check(bytes(data))
    assert reason is None or reason in REASONS
    if reason is not None:
        return
    pkt = parse_ipv6(bytes(data))
    assert pkt is not None and pkt.src in (*GUARD.addresses, bytes(16))
    if pkt.proto == 58 and pkt.payload and 133 <= pkt.payload[0] <= 137:
        msg = parse_nd(pkt.payload)
        assert msg is not None and msg.type in (133, 135, 136)
        assert all(a == NIC_MAC for a in msg.lladdrs)
        if msg.type == 136:
            assert msg.target in GUARD.addresses
