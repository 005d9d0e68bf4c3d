"""Routing between a VPC's subnets: the router alone, then on a NIC's path."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv4Network

from hypothesis import given
from hypothesis import strategies as st

from offload.network.hook import TxVerdict
from offload.network.router import Neighbor, Router, VpcDirectory
from offload.network.services import NicServices

from .guest import CARD_MAC, NIC_IP, NIC_MAC, csum, eth, ipv4, nic_config

PEER_IP = IPv4Address("10.8.1.7")
PEER_MAC = bytes.fromhex("02aa00000007")
SAME_IP = IPv4Address("10.8.0.9")  # the NIC's own subnet
DIRECTORY = VpcDirectory(
    vpc="vpc-a",
    neighbors=(
        Neighbor(NIC_IP, "52:54:00:12:34:56", IPv4Network("10.8.0.0/24"), "web-1"),
        Neighbor(PEER_IP, "02:aa:00:00:00:07", IPv4Network("10.8.1.0/24"), "db-1"),
        Neighbor(SAME_IP, "02:aa:00:00:00:09", IPv4Network("10.8.0.0/24"), "web-2"),
    ),
)


def to_peer(ttl: int = 64, dst: IPv4Address = PEER_IP, options: bytes = b"") -> bytearray:
    packet = bytearray(ipv4(b"x" * 32, 17, dst=dst.packed))
    packet[8] = ttl
    if options:
        packet[0] = 0x40 | (5 + len(options) // 4)
        packet[2:4] = (len(packet) + len(options)).to_bytes(2, "big")
        packet[20:20] = options
    packet[10:12] = b"\0\0"
    ihl = (packet[0] & 0xF) * 4
    packet[10:12] = csum(bytes(packet[:ihl])).to_bytes(2, "big")
    return bytearray(eth(bytes(packet)))


def services() -> NicServices:
    svc = NicServices(nic_config())
    svc.attach(lambda frame: None)
    svc.set_directory(DIRECTORY)
    return svc


def test_rewrites_macs_and_ttl_with_a_valid_checksum() -> None:
    frame = to_peer()
    before = bytes(frame)
    assert Router(DIRECTORY, card_mac=CARD_MAC).route(frame) is None
    assert frame[0:6] == PEER_MAC and frame[6:12] == CARD_MAC
    assert frame[22] == 63
    assert csum(bytes(frame[14:34])) == 0  # a header with its checksum sums to zero
    assert frame[34:] == before[34:] and frame[26:34] == before[26:34]


@given(ttl=st.integers(2, 255), proto=st.integers(0, 255), ident=st.integers(0, 0xFFFF))
def test_incremental_checksum_equals_a_full_one(ttl: int, proto: int, ident: int) -> None:
    frame = to_peer(ttl)
    frame[23] = proto
    frame[18:20] = ident.to_bytes(2, "big")
    frame[24:26] = b"\0\0"
    frame[24:26] = csum(bytes(frame[14:34])).to_bytes(2, "big")
    assert Router(DIRECTORY, card_mac=CARD_MAC).route(frame) is None
    check = bytearray(frame[14:34])
    check[10:12] = b"\0\0"
    assert struct.unpack("!H", frame[24:26])[0] == csum(bytes(check))


def test_unknown_destination_and_expired_ttl_are_refused_untouched() -> None:
    router = Router(DIRECTORY, card_mac=CARD_MAC)
    for frame, reason in (
        (to_peer(dst=IPv4Address("10.8.1.99")), "no_route"),
        (to_peer(ttl=1), "ttl_expired"),
        (to_peer(ttl=0), "ttl_expired"),
    ):
        before = bytes(frame)
        assert router.route(frame) == reason
        assert frame == before


def test_the_nic_routes_frames_for_the_gateway_mac_only() -> None:
    svc = services()
    frame = to_peer()
    assert svc.classify_tx(frame) is TxVerdict.FORWARD
    assert frame[0:6] == PEER_MAC and frame[22] == 63 and svc.routed == 1
    # with IP options: the slow path checks it, the router rewrites the same way
    frame = to_peer(options=b"\x01\x01\x01\x00")
    assert svc.classify_tx(frame) is TxVerdict.FORWARD
    assert frame[0:6] == PEER_MAC and frame[22] == 63 and svc.routed == 2
    assert csum(bytes(frame[14:38])) == 0
    # a frame to a neighbor's own MAC (same subnet) is switched, not routed
    direct = bytearray(to_peer(dst=SAME_IP))
    direct[0:6] = bytes.fromhex("02aa00000009")
    assert svc.classify_tx(direct) is TxVerdict.FORWARD and direct[22] == 64
    assert svc.routed == 2


def test_the_nic_drops_what_it_cannot_route_and_counts_it() -> None:
    svc = services()
    assert svc.classify_tx(to_peer(dst=IPv4Address("10.99.0.1"))) is TxVerdict.DROP
    assert svc.classify_tx(to_peer(ttl=1)) is TxVerdict.DROP
    assert svc.drops["no_route"] == 1 and svc.drops["ttl_expired"] == 1
    assert svc.dropped_policy == 2
    # a spoofed source is still refused before any routing
    spoofed = to_peer()
    spoofed[26:30] = bytes([10, 8, 0, 66])
    assert svc.classify_tx(spoofed) is TxVerdict.DROP and svc.drops["ipv4_src"] == 1


def test_other_vpcs_are_not_in_the_table() -> None:
    """A NIC routes with its own VPC's directory: another VPC's address (even
    one that exists there) has no route."""
    svc = NicServices(nic_config())
    svc.set_directory(VpcDirectory("vpc-b", ()))
    assert svc.classify_tx(to_peer()) is TxVerdict.DROP
    assert svc.drops["no_route"] == 1


def test_without_a_directory_frames_are_forwarded_as_before() -> None:
    svc = NicServices(nic_config())
    frame = to_peer()
    assert svc.classify_tx(frame) is TxVerdict.FORWARD and frame[0:6] == CARD_MAC
    assert svc.directory is None


def test_the_nic_mac_is_the_source() -> None:
    assert to_peer()[6:12] == NIC_MAC
