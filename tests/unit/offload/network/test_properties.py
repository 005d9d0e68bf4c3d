"""Hypothesis: random and mutated guest frames never raise and never speak for anyone else.

Every frame the card delivers must go to the NIC's MAC from the card's MAC;
IPv4 replies come from the gateway or 169.254.169.254 and go to the NIC's
address or (DHCP only) broadcast; ARP replies name the card's MAC and the
NIC's MAC and address.  Every delivered frame passes the independent checks
in ``guest.decode`` (lengths, IPv4 and L4 checksums).
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Interface

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offload.network.hook import TxVerdict
from offload.network.services import NicServices

from .guest import (
    BCAST_IP,
    CARD_MAC,
    GATEWAY,
    MD_IP,
    NIC_IP,
    NIC_IP6,
    NIC_LL6,
    NIC_MAC,
    arp_frame,
    decode,
    dhcp_frame,
    eth,
    ipv4,
    ipv6,
    lladdr_option,
    nd,
    nic_config,
    tcp_frame,
)

SEEDS = [
    dhcp_frame(1),
    dhcp_frame(3, requested=NIC_IP.packed, server=GATEWAY.packed),
    dhcp_frame(8, src_ip=NIC_IP.packed, ciaddr=NIC_IP.packed),
    arp_frame(1, sender_ip=NIC_IP.packed, target_ip=GATEWAY.packed),
    arp_frame(1, sender_ip=NIC_IP.packed, target_ip=MD_IP),
    tcp_frame(40000, 1, 0, 0x02, mss=1460),
    tcp_frame(40000, 2, 0, 0x18, b"GET /latest/meta-data/ HTTP/1.1\r\n\r\n"),
    tcp_frame(40000, 2, 0, 0x10),
    eth(ipv4(b"\x08\x00\x00\x00abcd", 1, dst=GATEWAY.packed)),
    eth(ipv6(nd(136, NIC_IP6, lladdr_option(2))), 0x86DD),
    eth(ipv6(nd(135, NIC_IP6), src=IPv6Address("::")), 0x86DD),
    eth(ipv6(b"\x80\x00\x00\x00abcd", src=NIC_LL6), 0x86DD),
]


def check_replies(svc: NicServices, sent: list[bytes]) -> None:
    assert svc.internal_errors == 0
    for frame in sent:
        r = decode(frame)
        assert (r.dst_mac, r.src_mac) == (NIC_MAC, CARD_MAC)
        if r.ethertype == 0x0806:
            assert r.arp[8:14] == CARD_MAC and r.arp[14:18] in (GATEWAY.packed, MD_IP)
            assert r.arp[18:24] == NIC_MAC and r.arp[24:28] == NIC_IP.packed
        elif r.proto == 17:
            assert r.src_ip == GATEWAY.packed and r.dst_ip in (NIC_IP.packed, BCAST_IP)
            assert (r.sport, r.dport) == (67, 68)
            assert r.payload[28:34] == NIC_MAC  # chaddr
        else:
            assert r.src_ip == MD_IP and r.dst_ip == NIC_IP.packed


def fresh() -> tuple[NicServices, list[bytes]]:
    svc = NicServices(nic_config(ipv6=(IPv6Interface(f"{NIC_IP6}/64"),)))
    sent: list[bytes] = []
    svc.attach(sent.append)
    return svc, sent


@given(st.binary(max_size=400))
def test_random_bytes(frame: bytes) -> None:
    svc, sent = fresh()
    assert isinstance(svc.classify_tx(frame), TxVerdict)
    check_replies(svc, sent)


@given(st.binary(max_size=400))
def test_random_payload_from_the_nic(payload: bytes) -> None:
    svc, sent = fresh()
    for ethertype in (0x0800, 0x0806, 0x86DD):
        svc.classify_tx(eth(payload, ethertype))
    check_replies(svc, sent)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(frame) - 1)))
        if op == "flip" and frame:
            frame[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and frame:
            frame[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del frame[pos:]
        elif op == "insert":
            frame[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del frame[pos : pos + draw(st.integers(1, 8))]
    return bytes(frame)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated(), min_size=1, max_size=8))
def test_mutated_frames(frames: list[bytes]) -> None:
    svc, sent = fresh()
    for frame in frames:
        verdict = svc.classify_tx(frame)
        if frame[6:12] != NIC_MAC:
            assert verdict is TxVerdict.DROP
        if verdict is TxVerdict.FORWARD:
            assert frame[12:14] in (b"\x08\x00", b"\x08\x06", b"\x86\xdd")
            if frame[12:14] == b"\x86\xdd":  # from the NIC's own IPv6 address or ::
                assert frame[22:38] in (NIC_IP6.packed, NIC_LL6.packed, bytes(16))
    check_replies(svc, sent)
    total = svc.forwarded + svc.consumed + svc.dropped_spoofed
    assert total + svc.dropped_malformed + svc.dropped_policy == len(frames)
    drops = svc.dropped_spoofed + svc.dropped_malformed + svc.dropped_policy
    assert sum(svc.drops.values()) == drops


segments = st.tuples(
    st.sampled_from([40000, 40001]),
    st.integers(0, 2**32 - 1) | st.sampled_from([0, 1, 2, 40, 2**32 - 1]),
    st.integers(0, 2**32 - 1),
    st.integers(0, 0x3F),
    st.sampled_from([b"", b"GET / HTTP/1.1\r\n", b"\r\n", b"GET /latest/user-data HTTP/1.0\n\n"]),
    st.integers(0, 65535),
)


@settings(max_examples=300)
@given(st.lists(segments, max_size=30), st.floats(0, 50))
def test_random_tcp_conversations(
    segs: list[tuple[int, int, int, int, bytes, int]], step: float
) -> None:
    clock = [0.0]
    svc = NicServices(nic_config(), clock=lambda: clock[0], max_connections=1, idle_timeout=20)
    sent: list[bytes] = []
    svc.attach(sent.append)
    for port, seq, ack, flags, payload, window in segs:
        assert (
            svc.classify_tx(tcp_frame(port, seq, ack, flags, payload, window=window)).name
            == "CONSUMED"
        )
        clock[0] += step
        svc.poll()
        assert len(svc.tcp) <= 1
    check_replies(svc, sent)


ipv4_seeds = st.sampled_from(
    [
        eth(ipv4(b"\x00\x35\x00\x35\x00\x0cabcd", 17, dst=b"\x0a\x08\x00\x07")),
        eth(ipv4(b"\x00\x44\x00\x43\x00\x0cabcd", 17, dst=GATEWAY.packed)),
        eth(ipv4(b"\x00\x43\x00\x44\x00\x0cabcd", 17, dst=BCAST_IP)),
        eth(ipv4(b"x" * 24, 6, dst=b"\x0a\x08\x00\x07")),
        eth(ipv4(b"x" * 24, 6, dst=MD_IP)),
    ]
)


@settings(max_examples=400)
@given(ipv4_seeds, st.lists(st.tuples(st.integers(14, 45), st.integers(0, 255)), max_size=4))
def test_fast_path_agrees_with_the_full_parse(frame: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(frame)
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    svc, _ = fresh()
    if svc._plain_ipv4(bytes(data)):
        assert svc._ipv4(bytes(data[14:]), []) is TxVerdict.FORWARD
