"""IPv6 and ND parsers: bounds, extension headers, options, and never a crash on any input."""

from __future__ import annotations

from ipaddress import IPv6Address

from hypothesis import given
from hypothesis import strategies as st

from offload.network.ipv6 import MAX_EXTENSIONS, link_local, parse_ipv6, parse_nd

from .guest import NIC_IP6, NIC_LL6, NIC_MAC, PEER_IP6, ext, frag, ipv6, lladdr_option, nd


def test_plain_packet_and_padding() -> None:
    pkt = parse_ipv6(ipv6(b"hello", 17) + bytes(10))  # ethernet padding after it
    assert pkt is not None
    assert (pkt.src, pkt.dst, pkt.proto, pkt.payload) == (
        NIC_IP6.packed,
        PEER_IP6.packed,
        17,
        b"hello",
    )
    assert not pkt.fragmented and pkt.hop_limit == 255


def test_refused_headers() -> None:
    good = ipv6(b"x" * 8, 17)
    assert parse_ipv6(good[:39]) is None  # shorter than the header
    assert parse_ipv6(b"\x40" + good[1:]) is None  # version 4
    assert parse_ipv6(good[:-1]) is None  # payload length past the frame
    assert parse_ipv6(ipv6(b"", 0)) is None  # a jumbogram
    assert parse_ipv6(ipv6(b"", 59)) is not None  # "no next header", empty: fine


def test_extension_headers_are_walked() -> None:
    hidden = ext(60) + ext(58) + nd(136, PEER_IP6)
    pkt = parse_ipv6(ipv6(hidden, 0))  # hop-by-hop -> destination options -> ICMPv6
    assert pkt is not None and pkt.proto == 58 and pkt.payload[0] == 136
    ah = bytes((58, 1)) + bytes(10)  # AH: (1 + 2) * 4 = 12 bytes
    pkt = parse_ipv6(ipv6(ah + nd(135, PEER_IP6), 51))
    assert pkt is not None and pkt.proto == 58 and pkt.payload[0] == 135
    assert parse_ipv6(ipv6(bytes((58, 3)) + bytes(6), 60)) is None  # length past the packet
    assert parse_ipv6(ipv6(b"\x3a", 60)) is None  # no room for the length byte
    chain = b"".join(ext(60) for _ in range(MAX_EXTENSIONS)) + ext(58)
    assert parse_ipv6(ipv6(chain, 60)) is None  # one too many


def test_fragments() -> None:
    first = parse_ipv6(ipv6(frag(58) + nd(136, NIC_IP6), 44))
    assert first is not None and first.fragmented and first.proto == 58
    later = parse_ipv6(ipv6(frag(58, offset=1448, more=False) + b"rest", 44))
    assert later is not None and later.fragmented and later.proto is None
    assert parse_ipv6(ipv6(frag(58)[:7], 44)) is None


def test_nd_messages() -> None:
    ns = parse_nd(nd(135, PEER_IP6, lladdr_option(1)))
    assert ns is not None and ns.type == 135 and ns.target == PEER_IP6.packed
    assert ns.lladdrs == (NIC_MAC,)
    na = parse_nd(nd(136, NIC_IP6, lladdr_option(2, b"\x02" * 6), bytes((5, 1)) + bytes(6)))
    assert na is not None and na.lladdrs == (b"\x02" * 6,)  # the MTU option is skipped
    rs = parse_nd(nd(133))
    assert rs is not None and rs.target is None and rs.lladdrs == ()
    assert parse_nd(nd(135, PEER_IP6)[:23]) is None  # too short for its type
    assert parse_nd(nd(135, PEER_IP6, bytes((1, 0)) + bytes(6))) is None  # option length 0
    assert parse_nd(nd(135, PEER_IP6, bytes((1, 2)) + bytes(6))) is None  # past the end
    assert parse_nd(nd(135, PEER_IP6) + b"\x01") is None  # half an option
    assert parse_nd(b"\x80\x00\x00\x00") is None  # an echo request is not ND
    assert parse_nd(b"") is None


def test_link_local_is_eui64_of_the_mac() -> None:
    assert link_local(NIC_MAC) == NIC_LL6.packed
    assert link_local(bytes.fromhex("020000000001")) == IPv6Address("fe80::ff:fe00:1").packed


@given(st.binary(max_size=200))
def test_parsers_never_raise(data: bytes) -> None:
    pkt = parse_ipv6(data)
    if pkt is not None:
        assert len(pkt.payload) <= len(data) - 40
        assert len(pkt.src) == len(pkt.dst) == 16
    nd_msg = parse_nd(data)
    if nd_msg is not None:
        assert all(len(a) == 6 for a in nd_msg.lladdrs)


SEEDS = [
    ipv6(nd(136, NIC_IP6, lladdr_option(2))),
    ipv6(ext(58) + nd(135, PEER_IP6, lladdr_option(1)), 60),
    ipv6(frag(58) + nd(136, NIC_IP6), 44),
    ipv6(b"\x00\x35\x00\x35\x00\x0c\x00\x00data", 17),
]


@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=6),
    st.integers(0, 130),
)
def test_mutated_packets_never_raise(seed: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    data = data[: len(data) - cut % (len(data) + 1)]
    pkt = parse_ipv6(bytes(data))
    if pkt is not None and pkt.proto == 58:
        parse_nd(pkt.payload)
