"""IPv4, UDP and TCP: a short conversation of packets from the guest through ``classify_tx``.

The input is a sequence of records ``u16 length, bytes``, each the
ethernet payload of an IPv4 frame from the NIC's MAC (at most 16 packets).
The metadata responder picks a random initial sequence number, which the
fuzzer cannot guess, so a TCP segment to 169.254.169.254 gets its ACK
number rebased: the record's ACK field counts from the ISN the card sent in
its SYN-ACK to that port (when it sent one).  Every reply must be well
formed (``fuzz.nic``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Final

from fuzz.nic import METADATA_IP, Nic, eth, ipv4, tcp, udp

__all__ = ["MAX_LEN", "make", "records", "seeds"]

MAX_LEN: Final = 4096
MAX_PACKETS: Final = 16
_LEN = struct.Struct("<H")
_SYN, _ACK, _FIN, _PSH, _RST = 0x02, 0x10, 0x01, 0x08, 0x04


def records(data: bytes) -> Iterator[bytes]:
    """The length-prefixed records of an input (a short last one is cut)."""
    offset = 0
    for _ in range(MAX_PACKETS):
        if offset + _LEN.size > len(data):
            return
        (n,) = _LEN.unpack_from(data, offset)
        offset += _LEN.size
        yield data[offset : offset + n]
        offset += n


def _learn_isns(replies: list[bytes], isns: dict[int, int]) -> None:
    for frame in replies:
        packet = frame[14:]
        if frame[12:14] != b"\x08\x00" or len(packet) < 40 or packet[9] != 6:
            continue
        seg = packet[20:]
        if seg[13] & (_SYN | _ACK) == _SYN | _ACK:
            isns[int.from_bytes(seg[2:4], "big")] = int.from_bytes(seg[4:8], "big")


def _rebase(packet: bytes, isns: dict[int, int]) -> bytes:
    if len(packet) < 20 or packet[9] != 6 or packet[16:20] != METADATA_IP:
        return packet
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 12 or ihl < 20:
        return packet
    isn = isns.get(int.from_bytes(packet[ihl : ihl + 2], "big"))
    if isn is None:
        return packet
    ack = (int.from_bytes(packet[ihl + 8 : ihl + 12], "big") + isn) & 0xFFFFFFFF
    return packet[: ihl + 8] + ack.to_bytes(4, "big") + packet[ihl + 12 :]


def make() -> Callable[[bytes], None]:
    def one(data: bytes) -> None:
        nic = Nic()
        isns: dict[int, int] = {}
        for packet in records(data):
            nic.send(eth(_rebase(packet, isns)))
            _learn_isns(nic.replies, isns)

    return one


def encode(*packets: bytes) -> bytes:
    return b"".join(_LEN.pack(len(p)) + p for p in packets)


def seeds() -> dict[str, bytes]:
    md = METADATA_IP
    get = b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"
    syn = ipv4(tcp(sport=40000, dport=80, seq=100, ack=0, flags=_SYN, mss=1460), 6, dst=md)
    ack = ipv4(tcp(sport=40000, dport=80, seq=101, ack=1, flags=_ACK), 6, dst=md)
    req = ipv4(
        tcp(sport=40000, dport=80, seq=101, ack=1, flags=_ACK | _PSH, payload=get), 6, dst=md
    )
    fin = ipv4(
        tcp(sport=40000, dport=80, seq=101 + len(get), ack=400, flags=_ACK | _FIN), 6, dst=md
    )
    peer = bytes((10, 8, 0, 9))
    return {
        "tcp_syn_to_metadata": encode(syn),
        "tcp_conversation_with_metadata": encode(syn, ack, req, fin),
        "tcp_rst_to_metadata": encode(
            syn, ipv4(tcp(sport=40000, dport=80, seq=101, ack=0, flags=_RST), 6, dst=md)
        ),
        "tcp_to_other_port": encode(
            ipv4(tcp(sport=40001, dport=22, seq=5, ack=0, flags=_SYN), 6, dst=md)
        ),
        "udp_to_peer": encode(ipv4(udp(b"hello", sport=5000, dport=53), 17, dst=peer)),
        "udp_from_dhcp_server_port": encode(
            ipv4(udp(b"x" * 300, sport=67, dport=68), 17, dst=peer)
        ),
        "icmp_to_gateway": encode(
            ipv4(bytes((8, 0, 0, 0, 0, 1, 0, 1)), 1, dst=bytes((10, 8, 0, 1)))
        ),
        "spoofed_source": encode(
            ipv4(udp(b"x", sport=1, dport=2), 17, src=bytes((10, 8, 0, 7)), dst=peer)
        ),
        "first_fragment_to_port_67": encode(
            ipv4(udp(b"y" * 16, sport=68, dport=67), 17, dst=peer)[:6]
            + b"\x20\x00"
            + ipv4(udp(b"y" * 16, sport=68, dport=67), 17, dst=peer)[8:]
        ),
        "options_header": encode(
            bytes((0x46,)) + ipv4(b"", 17)[1:20] + b"\x01\x01\x01\x00" + udp(b"z", sport=9, dport=9)
        ),
    }
