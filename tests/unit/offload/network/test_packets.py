"""Parsers never raise on any bytes; builders' checksums match an independent one."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from offload.network import packets as pk
from offload.network.arp import build_arp_reply, parse_arp

from .guest import csum

addr = st.binary(min_size=4, max_size=4)


@given(st.binary(max_size=200))
def test_parsers_never_raise(data: bytes) -> None:
    for parse in (pk.parse_ipv4, pk.parse_udp, pk.parse_tcp, parse_arp):
        parse(data)  # type: ignore[operator]


@given(addr, addr, st.integers(0, 65535), st.integers(0, 65535), st.binary(max_size=300))
def test_udp_and_ipv4_checksums(src: bytes, dst: bytes, sp: int, dp: int, data: bytes) -> None:
    datagram = pk.build_udp(src, dst, sp, dp, data)
    pseudo = src + dst + b"\x00\x11" + len(datagram).to_bytes(2, "big")
    assert csum(pseudo + datagram) == 0
    packet = pk.build_ipv4(src, dst, 17, datagram)
    assert csum(packet[:20]) == 0
    ip = pk.parse_ipv4(packet)
    assert ip is not None and (ip.src, ip.dst, ip.payload) == (src, dst, datagram)
    udp = pk.parse_udp(ip.payload)
    assert udp is not None and (udp.sport, udp.dport, udp.payload) == (sp, dp, data)


@given(
    addr,
    addr,
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 0x3F),
    st.binary(max_size=300),
    st.none() | st.integers(0, 65535),
)
def test_tcp_roundtrip(
    src: bytes, dst: bytes, seq: int, ack: int, flags: int, data: bytes, mss: int | None
) -> None:
    seg = pk.build_tcp(
        src,
        dst,
        sport=80,
        dport=1234,
        seq=seq,
        ack=ack,
        flags=flags,
        window=100,
        payload=data,
        mss=mss,
    )
    assert csum(src + dst + b"\x00\x06" + len(seg).to_bytes(2, "big") + seg) == 0
    parsed = pk.parse_tcp(seg)
    assert parsed is not None
    assert (parsed.seq, parsed.ack, parsed.flags, parsed.payload, parsed.mss) == (
        seq,
        ack,
        flags,
        data,
        mss,
    )


def test_ipv4_trims_ethernet_padding_and_rejects_bad_headers() -> None:
    packet = pk.build_ipv4(b"\x01" * 4, b"\x02" * 4, 1, b"abcd")
    parsed = pk.parse_ipv4(packet + bytes(20))
    assert parsed is not None and parsed.payload == b"abcd" and not parsed.fragment
    assert pk.parse_ipv4(b"\x4f" + packet[1:]) is None  # IHL 60 > total
    assert pk.parse_ipv4(packet[:2] + (19).to_bytes(2, "big") + packet[4:]) is None
    frag = packet[:6] + struct.pack("!H", 0x2000) + packet[8:]
    parsed = pk.parse_ipv4(frag)
    assert parsed is not None and parsed.fragment and parsed.offset == 0


def test_tcp_options_walk_is_bounded() -> None:
    base = pk.build_tcp(b"\0" * 4, b"\0" * 4, sport=1, dport=2, seq=0, ack=0, flags=2, window=0)
    for options in (b"\x01\x01\x02", b"\x03\x00\x00\x00", b"\x08\xff\x00\x00", b"\x00\x02\x04\x05"):
        seg = base[:12] + bytes(((5 + len(options) // 4) << 4,)) + base[13:20] + options
        parsed = pk.parse_tcp(seg)
        assert parsed is not None and parsed.mss is None


def test_arp_reply_layout() -> None:
    frame = build_arp_reply(
        our_mac=b"\x02" * 6, our_ip=b"\x0a\0\0\1", to_mac=b"\x52" * 6, to_ip=b"\x0a\0\0\5"
    )
    assert frame[:12] == b"\x52" * 6 + b"\x02" * 6 and frame[12:14] == b"\x08\x06"
    arp = parse_arp(frame[14:])
    assert arp is not None and arp.op == 2 and arp.sender_ip == b"\x0a\0\0\1"
    assert pk.mac_text(pk.mac_bytes("02:AB:cd:00:00:01")) == "02:ab:cd:00:00:01"
