"""The guest's side of a NIC, for tests: builds frames a guest sends, checks replies.

Reply checking is written independently of ``offload.network.packets`` (a
word-by-word checksum, ``struct`` field by field) so the two check each other.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address

from offload.network.services import METADATA_IP, InstanceMetadata, NicConfig

NIC_MAC = bytes.fromhex("525400123456")
CARD_MAC = bytes.fromhex("02bca1000001")
NIC_IP = IPv4Address("10.8.0.5")
GATEWAY = IPv4Address("10.8.0.1")
MD_IP = METADATA_IP.packed
BCAST_IP = b"\xff" * 4

METADATA = InstanceMetadata(
    instance_id="i-0123456789abcdef",
    hostname="web-1",
    local_ipv4=str(NIC_IP),
    mac="52:54:00:12:34:56",
    public_keys=("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample tenant@laptop",),
    user_data=b"#cloud-config\nhostname: web-1\n",
)


def nic_config(**changes: object) -> NicConfig:
    base: dict[str, object] = {
        "mac": "52:54:00:12:34:56",
        "ip": IPv4Interface("10.8.0.5/24"),
        "gateway": GATEWAY,
        "metadata": METADATA,
        "dns": (IPv4Address("10.8.0.2"), IPv4Address("1.1.1.1")),
        "hostname": "web-1",
        "mtu": 1450,
    }
    base.update(changes)
    return NicConfig(**base)  # type: ignore[arg-type]


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def eth(
    payload: bytes, ethertype: int = 0x0800, *, src: bytes = NIC_MAC, dst: bytes = CARD_MAC
) -> bytes:
    return dst + src + ethertype.to_bytes(2, "big") + payload


def ipv4(payload: bytes, proto: int, *, src: bytes = NIC_IP.packed, dst: bytes = MD_IP) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0, src, dst)
    header = header[:10] + csum(header).to_bytes(2, "big") + header[12:]
    return header + payload


def udp(payload: bytes, *, sport: int, dport: int) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(
    sport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    *,
    window: int = 64240,
    mss: int | None = None,
    dport: int = 80,
) -> bytes:
    opts = b"" if mss is None else b"\x02\x04" + mss.to_bytes(2, "big")
    hlen = 20 + len(opts)
    header = struct.pack(
        "!HHIIBBHHH",
        sport,
        dport,
        seq & 0xFFFFFFFF,
        ack & 0xFFFFFFFF,
        (hlen // 4) << 4,
        flags,
        window,
        0,
        0,
    )
    return header + opts + payload


def tcp_frame(sport: int, seq: int, ack: int, flags: int, payload: bytes = b"", **kw: int) -> bytes:
    return eth(ipv4(tcp(sport, seq, ack, flags, payload, **kw), 6))  # type: ignore[arg-type]


def arp_frame(
    op: int,
    *,
    sender_ip: bytes,
    target_ip: bytes,
    sender_mac: bytes = NIC_MAC,
    src: bytes = NIC_MAC,
) -> bytes:
    body = struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sender_mac, sender_ip, bytes(6), target_ip
    )
    return eth(body, 0x0806, src=src, dst=b"\xff" * 6)


def dhcp_payload(
    mtype: int,
    *,
    xid: int = 0x1234,
    requested: bytes | None = None,
    server: bytes | None = None,
    ciaddr: bytes = bytes(4),
    flags: int = 0,
    chaddr: bytes = NIC_MAC,
) -> bytes:
    fixed = struct.pack(
        "!BBBBIHH4s4s4s4s16s",
        1,
        1,
        6,
        0,
        xid,
        0,
        flags,
        ciaddr,
        bytes(4),
        bytes(4),
        bytes(4),
        chaddr,
    )
    opts = bytes((53, 1, mtype))
    if requested is not None:
        opts += bytes((50, 4)) + requested
    if server is not None:
        opts += bytes((54, 4)) + server
    opts += bytes((55, 4, 1, 3, 6, 26)) + b"\xff"
    return fixed + bytes(236 - len(fixed)) + b"\x63\x82\x53\x63" + opts


def dhcp_frame(mtype: int, *, src_ip: bytes = bytes(4), **kw: object) -> bytes:
    payload = dhcp_payload(mtype, **kw)  # type: ignore[arg-type]
    return eth(
        ipv4(udp(payload, sport=68, dport=67), 17, src=src_ip, dst=BCAST_IP), dst=b"\xff" * 6
    )


@dataclass
class Reply:
    """A frame the card delivered, decoded and checked field by field."""

    dst_mac: bytes
    src_mac: bytes
    ethertype: int
    src_ip: bytes = b""
    dst_ip: bytes = b""
    proto: int = 0
    sport: int = 0
    dport: int = 0
    seq: int = 0
    ack: int = 0
    flags: int = 0
    window: int = 0
    payload: bytes = b""
    arp: bytes = b""


def decode(frame: bytes) -> Reply:
    """Decode a reply, asserting every length and checksum is right."""
    r = Reply(frame[:6], frame[6:12], int.from_bytes(frame[12:14], "big"))
    body = frame[14:]
    if r.ethertype == 0x0806:
        r.arp = body
        return r
    assert r.ethertype == 0x0800
    assert body[0] == 0x45 and len(body) == int.from_bytes(body[2:4], "big")
    assert csum(body[:20]) == 0, "IPv4 header checksum"
    r.proto, r.src_ip, r.dst_ip = body[9], body[12:16], body[16:20]
    l4 = body[20:]
    pseudo = r.src_ip + r.dst_ip + bytes((0, r.proto)) + len(l4).to_bytes(2, "big")
    assert csum(pseudo + l4) == 0, "L4 checksum"
    if r.proto == 17:
        r.sport, r.dport, length, _ = struct.unpack_from("!HHHH", l4)
        assert length == len(l4)
        r.payload = l4[8:]
    else:
        assert r.proto == 6
        r.sport, r.dport, r.seq, r.ack, off, r.flags, r.window = struct.unpack_from("!HHIIBBH", l4)
        r.payload = l4[(off >> 4) * 4 :]
    return r


def dhcp_options(payload: bytes) -> dict[int, bytes]:
    assert payload[236:240] == b"\x63\x82\x53\x63"
    opts: dict[int, bytes] = {}
    i = 240
    while payload[i] != 255:
        if payload[i] == 0:
            i += 1
            continue
        code, length = payload[i], payload[i + 1]
        opts[code] = payload[i + 2 : i + 2 + length]
        i += 2 + length
    return opts


# -- IPv6 -------------------------------------------------------------------------

NIC_IP6 = IPv6Address("fd00:8::5")
#: fe80::/64 + the modified EUI-64 of NIC_MAC (52:54:00:12:34:56), worked out by hand
NIC_LL6 = IPv6Address("fe80::5054:ff:fe12:3456")
PEER_IP6 = IPv6Address("fd00:8::9")
ALL_NODES = IPv6Address("ff02::1")


def ipv6(
    payload: bytes,
    nh: int = 58,
    *,
    src: IPv6Address = NIC_IP6,
    dst: IPv6Address = PEER_IP6,
    hop_limit: int = 255,
) -> bytes:
    """An IPv6 packet (checksums of the payload are not computed: the card ignores them)."""
    header = struct.pack("!IHBB", 6 << 28, len(payload), nh, hop_limit)
    return header + src.packed + dst.packed + payload


def ext(nh: int, body: bytes = bytes(6)) -> bytes:
    """A hop-by-hop/routing/destination-options header: next header, length in 8 bytes - 1."""
    assert (len(body) + 2) % 8 == 0
    return bytes((nh, (len(body) + 2) // 8 - 1)) + body


def frag(nh: int, offset: int = 0, more: bool = True) -> bytes:
    return struct.pack("!BBHI", nh, 0, (offset // 8) << 3 | int(more), 7)


def lladdr_option(kind: int, mac: bytes = NIC_MAC) -> bytes:
    return bytes((kind, 1)) + mac


def nd(kind: int, target: IPv6Address | None = None, *options: bytes) -> bytes:
    """An ICMPv6 ND message: RS 133, RA 134, NS 135, NA 136, redirect 137."""
    fixed = {133: bytes(4), 134: bytes(12), 135: bytes(4), 136: b"\x60" + bytes(3)}.get(kind)
    body = fixed if fixed is not None else bytes(4)
    if kind in (135, 136, 137):
        assert target is not None
        body += target.packed
    if kind == 137:
        body += PEER_IP6.packed
    return bytes((kind, 0, 0, 0)) + body + b"".join(options)
