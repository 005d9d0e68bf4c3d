"""NicServices driven as a guest would: frames in, verdicts and delivered frames out."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface

import pytest

from offload.network.errors import InvalidNicConfig
from offload.network.hook import NicHook, TxVerdict
from offload.network.metadata import TTL_HEADER as TTL_HEADER_BYTES
from offload.network.services import MetadataTokens, NicServices

from .guest import (
    BCAST_IP,
    CARD_MAC,
    GATEWAY,
    MD_IP,
    METADATA,
    NIC_IP,
    NIC_IP6,
    NIC_LL6,
    NIC_MAC,
    PEER_IP6,
    arp_frame,
    decode,
    dhcp_frame,
    dhcp_options,
    dhcp_payload,
    eth,
    ipv4,
    ipv6,
    lladdr_option,
    nd,
    nic_config,
    tcp_frame,
    udp,
)

SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
TTL_HEADER = TTL_HEADER_BYTES.decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**changes: object) -> tuple[NicServices, list[bytes], Clock]:
    clock = Clock()
    svc = NicServices(nic_config(**changes), clock=clock)
    sent: list[bytes] = []
    svc.attach(sent.append)
    return svc, sent, clock


def test_is_a_nic_hook() -> None:
    svc: NicHook = make()[0]
    assert svc.classify_tx(eth(ipv4(b"ping", 1, dst=GATEWAY.packed))) is TxVerdict.FORWARD


def test_dhcp_handshake() -> None:
    svc, sent, _ = make()
    assert svc.classify_tx(dhcp_frame(1, xid=77)) is TxVerdict.CONSUMED
    (offer,) = map(decode, sent)
    assert (offer.dst_mac, offer.src_mac) == (NIC_MAC, CARD_MAC)
    assert (offer.src_ip, offer.dst_ip, offer.sport, offer.dport) == (
        GATEWAY.packed,
        BCAST_IP,
        67,
        68,
    )
    assert offer.payload[0] == 2 and offer.payload[4:8] == (77).to_bytes(4, "big")
    assert offer.payload[16:20] == NIC_IP.packed  # yiaddr
    opts = dhcp_options(offer.payload)
    assert opts[53] == b"\x02" and opts[54] == GATEWAY.packed
    assert opts[1] == IPv4Address("255.255.255.0").packed and opts[3] == GATEWAY.packed
    assert opts[6] == IPv4Address("10.8.0.2").packed + IPv4Address("1.1.1.1").packed
    assert opts[12] == b"web-1" and opts[26] == (1450).to_bytes(2, "big")
    assert int.from_bytes(opts[51], "big") == 86400

    sent.clear()
    request = dhcp_frame(3, xid=78, requested=NIC_IP.packed, server=GATEWAY.packed)
    assert svc.classify_tx(request) is TxVerdict.CONSUMED
    (ack,) = map(decode, sent)
    assert dhcp_options(ack.payload)[53] == b"\x05" and ack.payload[16:20] == NIC_IP.packed

    # renewal: unicast from the leased address, answered to it
    sent.clear()
    renew = eth(
        ipv4(udp(dhcp_payload(3, ciaddr=NIC_IP.packed), sport=68, dport=67), 17, dst=GATEWAY.packed)
    )
    assert svc.classify_tx(renew) is TxVerdict.CONSUMED
    (ack,) = map(decode, sent)
    assert ack.dst_ip == NIC_IP.packed and dhcp_options(ack.payload)[53] == b"\x05"
    assert svc.consumed == 3 and svc.forwarded == 0 and svc.dropped_spoofed == 0


def test_dhcp_nak_for_a_wrong_address_and_silence_for_another_server() -> None:
    svc, sent, _ = make()
    svc.classify_tx(dhcp_frame(3, requested=IPv4Address("10.8.0.99").packed))
    (nak,) = map(decode, sent)
    assert dhcp_options(nak.payload)[53] == b"\x06" and nak.dst_ip == BCAST_IP
    assert nak.payload[16:20] == bytes(4)
    sent.clear()
    other = IPv4Address("10.8.0.3").packed
    assert svc.classify_tx(dhcp_frame(3, requested=NIC_IP.packed, server=other)).name == "CONSUMED"
    assert sent == []


def test_dhcp_ignores_another_chaddr_and_release() -> None:
    svc, sent, _ = make()
    assert svc.classify_tx(dhcp_frame(1, chaddr=bytes.fromhex("525400999999"))).name == "CONSUMED"
    assert svc.classify_tx(dhcp_frame(7, src_ip=NIC_IP.packed)).name == "CONSUMED"
    assert sent == []


def test_no_address_means_no_lease() -> None:
    svc, sent, _ = make(ip=None, gateway=None)
    assert svc.classify_tx(dhcp_frame(1)) is TxVerdict.CONSUMED
    assert sent == []
    assert svc.classify_tx(tcp_frame(40000, 1, 0, SYN)) is TxVerdict.DROP


def test_arp_for_gateway_and_metadata() -> None:
    svc, sent, _ = make()
    for target in (GATEWAY.packed, MD_IP):
        sent.clear()
        frame = arp_frame(1, sender_ip=NIC_IP.packed, target_ip=target)
        assert svc.classify_tx(frame) is TxVerdict.CONSUMED
        (reply,) = sent
        assert reply[:6] == NIC_MAC and reply[6:12] == CARD_MAC and reply[12:14] == b"\x08\x06"
        body = reply[14:]
        assert body[6:8] == b"\x00\x02"  # reply
        assert body[8:14] == CARD_MAC and body[14:18] == target
        assert body[18:24] == NIC_MAC and body[24:28] == NIC_IP.packed
    sent.clear()
    peer = arp_frame(1, sender_ip=NIC_IP.packed, target_ip=IPv4Address("10.8.0.7").packed)
    assert svc.classify_tx(peer) is TxVerdict.FORWARD and sent == []


def test_spoofing_is_dropped_and_counted() -> None:
    svc, sent, _ = make()
    other_mac = bytes.fromhex("525400abcdef")
    other_ip = IPv4Address("10.8.0.6").packed
    frames = [
        eth(ipv4(b"x" * 8, 1, dst=other_ip), src=other_mac),  # wrong MAC
        eth(ipv4(b"x" * 8, 1, src=other_ip, dst=IPv4Address("10.8.0.7").packed)),  # wrong IP
        eth(ipv4(b"x" * 8, 1, src=bytes(4), dst=other_ip)),  # 0.0.0.0 but not DHCP
        arp_frame(1, sender_ip=other_ip, target_ip=GATEWAY.packed),  # ARP, wrong sender IP
        arp_frame(2, sender_ip=NIC_IP.packed, target_ip=other_ip, sender_mac=other_mac),
        tcp_frame(40000, 1, 0, SYN)[:6] + other_mac + tcp_frame(40000, 1, 0, SYN)[12:],
    ]
    for frame in frames:
        assert svc.classify_tx(frame) is TxVerdict.DROP
    assert svc.dropped_spoofed == len(frames) and sent == []
    assert svc.forwarded == svc.consumed == 0


def test_forwarding_and_policy() -> None:
    svc, sent, _ = make()
    peer = IPv4Address("10.8.0.7").packed
    assert svc.classify_tx(eth(ipv4(b"ping", 1, dst=peer))) is TxVerdict.FORWARD
    assert svc.classify_tx(eth(ipv4(b"ping", 1, dst=GATEWAY.packed))) is TxVerdict.FORWARD
    rogue = eth(ipv4(udp(b"offer", sport=67, dport=68), 17, dst=BCAST_IP))
    assert svc.classify_tx(rogue) is TxVerdict.DROP
    vlan = eth(b"\x00\x05\x08\x00" + ipv4(b"x", 1, src=peer, dst=peer), 0x8100)
    assert svc.classify_tx(vlan) is TxVerdict.DROP
    assert svc.classify_tx(eth(ipv4(b"x", 1), 0x0800)) is TxVerdict.CONSUMED  # ICMP to metadata
    assert svc.dropped_policy == 2 and svc.forwarded == 2 and sent == []
    assert svc.drops == {"dhcp_server": 1, "vlan": 1}


def test_other_ethertypes_are_dropped_and_counted() -> None:
    svc, sent, _ = make()
    for ethertype in (0x88CC, 0x8863, 0x88E5, 0x0842, 0x8035, 0x0000, 0x05DC, 0xFFFF):
        assert svc.classify_tx(eth(b"x" * 46, ethertype)) is TxVerdict.DROP, hex(ethertype)
    assert svc.drops == {"ethertype": 8} and svc.dropped_policy == 8 and sent == []


def test_ipv6_without_an_address_is_dropped() -> None:
    svc, sent, _ = make()
    for src in (NIC_LL6, NIC_IP6):
        assert svc.classify_tx(eth(ipv6(b"x" * 8, 17, src=src), 0x86DD)) is TxVerdict.DROP
    assert svc.drops == {"ipv6_disabled": 2} and svc.dropped_policy == 2 and sent == []


def test_ipv6_checked_against_the_nics_addresses() -> None:
    svc, sent, _ = make(ipv6=(IPv6Interface("fd00:8::5/64"),))
    other = bytes.fromhex("525400999999")
    frames = {
        ipv6(b"x" * 8, 17): TxVerdict.FORWARD,
        ipv6(nd(135, PEER_IP6, lladdr_option(1)), src=NIC_LL6): TxVerdict.FORWARD,
        ipv6(nd(136, NIC_IP6, lladdr_option(2))): TxVerdict.FORWARD,
        ipv6(b"x" * 8, 17, src=PEER_IP6): TxVerdict.DROP,
        ipv6(nd(136, PEER_IP6, lladdr_option(2))): TxVerdict.DROP,
        ipv6(nd(136, NIC_IP6, lladdr_option(2, other))): TxVerdict.DROP,
        ipv6(nd(134)): TxVerdict.DROP,
        ipv6(b"x" * 8, 17)[:-3]: TxVerdict.DROP,
    }
    for packet, verdict in frames.items():
        assert svc.classify_tx(eth(packet, 0x86DD)) is verdict
    assert svc.forwarded == 3 and sent == []
    assert svc.drops == {
        "ipv6_src": 1,
        "ndp_target": 1,
        "ndp_lladdr": 1,
        "ndp_router": 1,
        "ipv6_malformed": 1,
    }
    assert (svc.dropped_spoofed, svc.dropped_policy, svc.dropped_malformed) == (3, 1, 1)
    spoofed_mac = eth(ipv6(b"x" * 8, 17), 0x86DD, src=other)
    assert svc.classify_tx(spoofed_mac) is TxVerdict.DROP and svc.drops["src_mac"] == 1


def test_malformed_frames_are_dropped_without_replies() -> None:
    svc, sent, _ = make()
    good = tcp_frame(40000, 1, 0, SYN)
    bad = [
        b"",
        NIC_MAC,
        good[:20],  # truncated IPv4 header
        good[:14] + b"\x46" + good[15:],  # IHL 6 with no options room checked below
        good[:14] + b"\x44" + good[15:],  # IHL 4
        good[:14] + b"\x55" + good[15:],  # version 5
        good[:16] + b"\xff\xff" + good[18:],  # total length past the frame
        eth(b"\x00\x01\x08\x00\x06", 0x0806),  # truncated ARP
    ]
    for frame in bad:
        assert svc.classify_tx(frame) is TxVerdict.DROP or frame[14] == 0x46
    assert sent == [] and svc.internal_errors == 0


def test_config_is_validated() -> None:
    for bad in (
        {"mac": "ff:ff:ff:ff:ff:ff"},
        {"mac": "nonsense"},
        {"card_mac": "52:54:00:12:34:56"},
        {"gateway": IPv4Address("10.9.0.1")},
        {"gateway": IPv4Address("10.8.0.5")},
        {"ip": IPv4Interface("10.8.0.0/24")},
        {"mtu": 100},
        {"hostname": "bad host"},
        {"lease_seconds": 1},
        {"ipv6": (IPv6Interface("ff02::1/128"),)},
        {"ipv6": (IPv6Interface("::/0"),)},
        {"ipv6": tuple(IPv6Interface(f"fd00::{i}/64") for i in range(1, 18))},
    ):
        with pytest.raises(InvalidNicConfig):
            NicServices(nic_config(**bad))


class HttpGuest:
    """A TCP client played with frames against the card."""

    def __init__(self, svc: NicServices, sent: list[bytes], port: int = 43210) -> None:
        self.svc, self.sent, self.port = svc, sent, port
        self.seq = 0x7FFFFFF0  # wraps during the exchange
        self.rcv = 0

    def send(self, flags: int, payload: bytes = b"", **kw: int) -> list:  # type: ignore[type-arg]
        self.sent.clear()
        frame = tcp_frame(self.port, self.seq, self.rcv, flags, payload, **kw)
        assert self.svc.classify_tx(frame) is TxVerdict.CONSUMED
        replies = [decode(f) for f in self.sent]
        for r in replies:
            assert (r.dst_mac, r.src_mac, r.src_ip, r.dst_ip) == (
                NIC_MAC,
                CARD_MAC,
                MD_IP,
                NIC_IP.packed,
            )
            assert (r.sport, r.dport) == (kw.get("dport", 80), self.port)
        return replies

    def connect(self, mss: int = 1460) -> None:
        (synack,) = self.send(SYN, mss=mss)
        assert synack.flags == SYN | ACK and synack.ack == (self.seq + 1) & 0xFFFFFFFF
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        self.rcv = (synack.seq + 1) & 0xFFFFFFFF
        assert self.send(ACK) == []

    def get(self, path: str, mss: int = 1460, window: int = 64240, token: str = "") -> bytes:
        head = f"X-aws-ec2-metadata-token: {token}\r\n" if token else ""
        return self.request(f"GET {path}", head, mss=mss, window=window)

    def put_token(self, ttl: int) -> str:
        response = self.request("PUT /latest/api/token", f"{TTL_HEADER}: {ttl}\r\n")
        head, token = response.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 OK") and f"{TTL_HEADER}: {ttl}".encode() in head
        return token.decode()

    def request(self, line: str, headers: str = "", mss: int = 1460, window: int = 64240) -> bytes:
        self.connect(mss)
        request = f"{line} HTTP/1.1\r\nHost: 169.254.169.254\r\n{headers}\r\n".encode()
        replies = self.send(ACK | PSH, request, window=window)
        self.seq = (self.seq + len(request)) & 0xFFFFFFFF
        body = b""
        while True:
            for r in replies:
                assert r.seq == self.rcv, "in order, no gaps"
                body += r.payload
                self.rcv = (self.rcv + len(r.payload) + (r.flags & FIN)) & 0xFFFFFFFF
            if replies and replies[-1].flags & FIN:
                break
            replies = self.send(ACK, window=window)  # window update / ACK of what we got
            assert replies, "the card must keep sending"
        (last_ack,) = self.send(ACK | FIN)
        assert last_ack.flags == ACK and last_ack.ack == (self.seq + 1) & 0xFFFFFFFF
        return body


def test_http_get_instance_id() -> None:
    svc, sent, _ = make(metadata_tokens=MetadataTokens.OPTIONAL)
    response = HttpGuest(svc, sent).get("/latest/meta-data/instance-id")
    head, body = response.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in head
    assert body == b"i-0123456789abcdef"
    assert len(svc.tcp) == 1  # TIME_WAIT until it expires


def test_http_response_is_segmented_by_mss_and_window() -> None:
    svc, sent, _ = make(
        metadata=replace(METADATA, user_data=b"A" * 5000), metadata_tokens=MetadataTokens.OPTIONAL
    )
    response = HttpGuest(svc, sent).get("/latest/user-data", mss=100, window=300)
    assert response.endswith(b"A" * 5000)


def test_http_paths() -> None:
    svc, sent, _ = make(metadata_tokens=MetadataTokens.OPTIONAL)
    cases = {
        "/latest/meta-data/": b"instance-id\nhostname\nlocal-ipv4\nmac\npublic-keys/",
        "/latest/meta-data/public-keys/": b"0=key0",
        "/latest/meta-data/public-keys/0/openssh-key": METADATA.public_keys[0].encode() + b"\n",
        "/latest/meta-data/local-ipv4": b"10.8.0.5",
        "/latest/user-data": b"#cloud-config\nhostname: web-1\n",
    }
    for port, (path, want) in enumerate(cases.items(), start=40000):
        response = HttpGuest(svc, sent, port=port).get(path)
        assert response.split(b"\r\n\r\n", 1)[1] == want, path
    missing = HttpGuest(svc, sent, port=39999).get("/latest/meta-data/nope")
    assert missing.startswith(b"HTTP/1.1 404")


def test_session_tokens_required() -> None:
    svc, sent, clock = make()  # the default policy: required
    denied = HttpGuest(svc, sent, port=41000).get("/latest/meta-data/instance-id")
    assert denied.startswith(b"HTTP/1.1 401") and b"i-0123" not in denied
    token = HttpGuest(svc, sent, port=41001).put_token(60)
    assert len(token) >= 40
    ok = HttpGuest(svc, sent, port=41002).get("/latest/meta-data/instance-id", token=token)
    assert ok.startswith(b"HTTP/1.1 200") and ok.endswith(b"i-0123456789abcdef")
    forged = HttpGuest(svc, sent, port=41003).get("/latest/user-data", token=token[:-1] + "x")
    assert forged.startswith(b"HTTP/1.1 401")
    # bound to the NIC: another NIC's services do not know the token
    other, other_sent, _ = make(metadata_tokens=MetadataTokens.OPTIONAL)
    foreign = HttpGuest(other, other_sent).get("/latest/meta-data/instance-id", token=token)
    assert foreign.startswith(b"HTTP/1.1 401")
    clock.now += 61  # expired
    late = HttpGuest(svc, sent, port=41004).get("/latest/meta-data/instance-id", token=token)
    assert late.startswith(b"HTTP/1.1 401")
    assert svc.metadata.unauthorized == 3


def test_retransmitted_syn_and_request_are_answered_again() -> None:
    svc, sent, _ = make(metadata_tokens=MetadataTokens.OPTIONAL)
    g = HttpGuest(svc, sent)
    (first,) = g.send(SYN, mss=1460)
    (again,) = g.send(SYN, mss=1460)
    assert again.seq == first.seq and again.flags == SYN | ACK
    g.seq += 1
    g.rcv = first.seq + 1
    request = b"GET /latest/meta-data/hostname HTTP/1.0\r\n\r\n"
    replies = g.send(ACK | PSH, request)
    assert replies and replies[-1].flags & FIN
    again = g.send(ACK | PSH, request)  # our ACK was "lost": the guest sends it again
    assert [r.payload for r in again] == [r.payload for r in replies]  # go-back: resent


def test_unexpected_segments_get_rst() -> None:
    svc, sent, _ = make()
    g = HttpGuest(svc, sent, port=50000)
    g.seq, g.rcv = 1000, 5555
    (rst,) = g.send(ACK, b"data")
    assert rst.flags == RST and rst.seq == 5555
    (rst,) = g.send(SYN, dport=22)
    assert rst.flags == RST | ACK and rst.ack == 1001
    assert g.send(RST) == []  # never answer a RST


def test_rst_closes_and_cap_holds() -> None:
    svc, sent, clock = make()
    for port in range(1000, 1064):
        HttpGuest(svc, sent, port=port).send(SYN)
    assert len(svc.tcp) == 64
    HttpGuest(svc, sent, port=2000).send(SYN)  # evicts the oldest half-open one
    assert len(svc.tcp) == 64 and svc.tcp.evicted == 1
    clock.now += 31
    svc.poll()
    assert len(svc.tcp) == 0 and svc.tcp.expired == 64


def test_oversized_request_is_reset() -> None:
    svc, sent, _ = make()
    g = HttpGuest(svc, sent)
    g.connect()
    replies = g.send(ACK, b"GET /" + b"a" * 9000)
    assert replies[-1].flags & RST
    assert len(svc.tcp) == 0


def test_undelivered_replies_are_counted() -> None:
    svc = NicServices(nic_config())
    assert svc.classify_tx(dhcp_frame(1)) is TxVerdict.CONSUMED
    assert svc.replies_undelivered == 1
