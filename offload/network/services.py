"""Card services on one NIC's path: anti-spoofing, DHCP, ARP and instance metadata.

``NicServices`` is the ``NicHook`` a virtio-net device calls with every frame
the guest transmits.  ``classify_tx`` decides in this order, reading the
frame with the defensive parsers of ``packets``/``arp``/``dhcp``/``ipv6``;
every drop is counted under its reason (``drops``, the keys of
``DROP_REASONS``) and its kind (``dropped_spoofed``/``_malformed``/``_policy``):

1. shorter than an ethernet header                        DROP short_frame
2. source MAC is not the NIC's                            DROP src_mac
3. 802.1Q/802.1ad tag (would carry an unchecked packet)   DROP vlan
4. ARP: unparseable -> DROP arp_malformed; sender MAC/IP not the NIC's ->
   DROP arp_spoofed; asks for the gateway or 169.254.169.254 -> answered
   with the card's MAC, CONSUMED; any other ARP for those addresses
   CONSUMED; otherwise FORWARD
5. IPv4: unparseable (version, IHL, total length) -> DROP ipv4_malformed;
   source 0.0.0.0 is allowed only for a DHCP client message (UDP 68 -> 67),
   CONSUMED and answered; any other source but the NIC's -> DROP ipv4_src;
   to 169.254.169.254 -> CONSUMED (TCP goes to the metadata responder);
   UDP to port 67 -> CONSUMED (DHCP, answered); UDP from port 67 -> DROP
   dhcp_server (no DHCP server inside a VPC); UDP to the gateway's port 53
   -> CONSUMED (the VPC's DNS, ``dns``, answered from the directory, or
   not at all without one); otherwise, when the NIC has a
   VPC directory (``set_directory``) and the frame is addressed to the
   card's MAC (the gateway), ROUTED by ``router.Router`` (rewritten in
   place, then FORWARD) or DROP no_route / ttl_expired; otherwise FORWARD
6. IPv6: ``ipv6_guard.Ipv6Guard`` (the NIC's addresses and its link-local
   address, NDP target and link-layer options, no router messages; all of
   it dropped when the NIC has no IPv6 address) -> FORWARD or DROP with its
   reason
7. any other ethertype                                    DROP ethertype

Replies (DHCP, ARP, TCP) are built here with the card's MAC and address as
source and the NIC's MAC (and address, or broadcast for DHCP) as
destination, every checksum computed, and handed to the ``deliver``
function given by ``attach``; they are collected under the lock and
delivered after it is released.  Unparseable DHCP and TCP payloads are
consumed without an answer.  ``classify_tx`` never raises: a bug in a
service is logged, counted in ``internal_errors``, and the frame dropped.

One lock guards the counters and the TCP state, so TX queues on several
threads may call in.  ``poll()`` expires idle TCP state and retransmits
unacknowledged metadata responses; a device calls it from a timer if it can
lose RX frames (without it, guests retransmitting requests still recover).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface

from offload.network import dns
from offload.network import packets as pk
from offload.network.arp import ARP_REQUEST, build_arp_reply, parse_arp
from offload.network.dhcp import DhcpLease, answer, parse_dhcp
from offload.network.errors import InvalidNicConfig
from offload.network.hook import TxVerdict
from offload.network.ipv6_guard import REASONS as IPV6_REASONS
from offload.network.ipv6_guard import Ipv6Guard
from offload.network.metadata import InstanceMetadata, MetadataApp
from offload.network.router import Router, VpcDirectory
from offload.network.tcp import TcpReply, TcpResponder
from offload.network.tokens import MetadataTokens

__all__ = [
    "DEFAULT_CARD_MAC",
    "DROP_REASONS",
    "METADATA_IP",
    "InstanceMetadata",
    "MetadataTokens",
    "NicConfig",
    "NicServices",
]

log = logging.getLogger("offload.network.services")

METADATA_IP = IPv4Address("169.254.169.254")
DEFAULT_CARD_MAC = "02:bc:a1:00:00:01"
MAX_USER_DATA = 64 * 1024
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_ZERO = bytes(4)
_METADATA = METADATA_IP.packed
_DHCP_SERVER_PORT = (67).to_bytes(2, "big")
_IPV6_KINDS = {
    "ipv6_disabled": "policy",
    "ipv6_malformed": "malformed",
    "ndp_fragmented": "policy",
    "ndp_router": "policy",
}
#: why a frame is dropped -> the kind it is counted under as well
DROP_REASONS: dict[str, str] = {
    "short_frame": "malformed",
    "src_mac": "spoofed",
    "vlan": "policy",
    "ethertype": "policy",
    "arp_malformed": "malformed",
    "arp_spoofed": "spoofed",
    "ipv4_malformed": "malformed",
    "ipv4_src": "spoofed",
    "dhcp_server": "policy",
    "no_route": "policy",
    "ttl_expired": "policy",
    **{reason: _IPV6_KINDS.get(reason, "spoofed") for reason in IPV6_REASONS},
}


@dataclass(frozen=True, slots=True)
class NicConfig:
    """One NIC as the card serves it; ``ip`` None means no address (DHCP stays silent)."""

    mac: str
    ip: IPv4Interface | None
    gateway: IPv4Address | None
    metadata: InstanceMetadata
    dns: tuple[IPv4Address, ...] = ()
    hostname: str = ""
    mtu: int = 1500
    lease_seconds: int = 86400
    card_mac: str = DEFAULT_CARD_MAC
    metadata_tokens: MetadataTokens = MetadataTokens.REQUIRED
    #: the NIC's IPv6 addresses; none: IPv6 is dropped (link-local included)
    ipv6: tuple[IPv6Interface, ...] = ()


def _unicast_mac(text: str, what: str) -> bytes:
    try:
        mac = pk.mac_bytes(text)
    except ValueError as exc:
        raise InvalidNicConfig(f"{what}: {exc}") from exc
    if mac[0] & 1 or mac == bytes(6):
        raise InvalidNicConfig(f"{what} {text} is not a unicast MAC")
    return mac


def _check(config: NicConfig) -> tuple[bytes, bytes]:
    mac = _unicast_mac(config.mac, "mac")
    card_mac = _unicast_mac(config.card_mac, "card_mac")
    if mac == card_mac:
        raise InvalidNicConfig("the NIC and the card need different MACs")
    if not 576 <= config.mtu <= 65535:
        raise InvalidNicConfig(f"mtu {config.mtu} is outside 576..65535")
    if not 60 <= config.lease_seconds < 2**31:
        raise InvalidNicConfig(f"lease_seconds {config.lease_seconds} is outside 60..2**31-1")
    if config.hostname and not _HOSTNAME.fullmatch(config.hostname):
        raise InvalidNicConfig(f"hostname {config.hostname!r} is not a DNS name")
    if len(config.dns) > 16:
        raise InvalidNicConfig("at most 16 DNS servers")
    if config.ip is not None:
        if config.ip.ip in (config.ip.network.network_address, METADATA_IP) or (
            config.ip.network.prefixlen < 31 and config.ip.ip == config.ip.network.broadcast_address
        ):
            raise InvalidNicConfig(f"{config.ip} cannot be a host address")
        if config.gateway is not None and (
            config.gateway == config.ip.ip or config.gateway not in config.ip.network
        ):
            raise InvalidNicConfig(f"gateway {config.gateway} is not a peer in {config.ip}")
    if len(config.ipv6) > 16:
        raise InvalidNicConfig("at most 16 IPv6 addresses")
    for addr in config.ipv6:
        if addr.ip.is_multicast or addr.ip.is_unspecified or addr.ip.is_loopback:
            raise InvalidNicConfig(f"{addr} cannot be a host address")
    user_data = config.metadata.user_data
    if user_data is not None and len(user_data) > MAX_USER_DATA:
        raise InvalidNicConfig(f"user-data is larger than {MAX_USER_DATA} bytes")
    return mac, card_mac


class NicServices:
    """The card's services for one NIC (implements ``offload.network.hook.NicHook``)."""

    def __init__(
        self,
        config: NicConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_connections: int = 64,
        max_request_bytes: int = 8192,
        idle_timeout: float = 30.0,
    ) -> None:
        self.config = config
        self._mac, self._card_mac = _check(config)
        self._ip = None if config.ip is None else config.ip.ip.packed
        self._v6 = Ipv6Guard(self._mac, (a.ip for a in config.ipv6))
        self._server = config.gateway if config.gateway is not None else METADATA_IP
        self._answered = {METADATA_IP.packed}
        self._gateway = b"" if config.gateway is None else config.gateway.packed
        if config.gateway is not None:
            self._answered.add(config.gateway.packed)
        self._router: Router | None = None
        self._zone: dns.VpcZone | None = None
        self._lease = (
            None
            if config.ip is None
            else DhcpLease(
                mac=self._mac,
                address=config.ip,
                server=self._server,
                router=config.gateway,
                dns=config.dns,
                hostname=config.hostname,
                mtu=config.mtu,
                lease_seconds=config.lease_seconds,
            )
        )
        self._app = MetadataApp(config.metadata, tokens=config.metadata_tokens, clock=clock)
        self._tcp = TcpResponder(
            self._app,
            port=80,
            mss=config.mtu - 40,
            max_connections=max_connections,
            max_request=max_request_bytes,
            idle_timeout=idle_timeout,
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._deliver: Callable[[bytes], None] | None = None
        self.forwarded = 0
        self.consumed = 0
        self.dropped_spoofed = 0
        self.dropped_malformed = 0
        self.dropped_policy = 0
        #: dropped frames by reason (the keys of DROP_REASONS)
        self.drops: Counter[str] = Counter()
        self.replies = 0
        self.replies_undelivered = 0
        self.routed = 0
        self.internal_errors = 0

    @property
    def metadata(self) -> MetadataApp:
        """The metadata HTTP app (its token table and 401 counter)."""
        return self._app

    @property
    def tcp(self) -> TcpResponder:
        """The metadata TCP responder (its counters and connection table)."""
        return self._tcp

    @property
    def directory(self) -> VpcDirectory | None:
        """The VPC directory frames are routed with (None: not routing)."""
        router = self._router
        return None if router is None else router.directory

    def set_directory(self, directory: VpcDirectory) -> None:
        """Route with *directory* from now on (a new router, swapped in under the lock)."""
        router = Router(directory, card_mac=self._card_mac)
        zone = dns.VpcZone(
            directory.vpc,
            ((n.hostname, n.ip) for n in directory.neighbors),
            {n.subnet for n in directory.neighbors},
        )
        with self._lock:
            self._router = router
            self._zone = zone

    def attach(self, deliver: Callable[[bytes], None]) -> None:
        self._deliver = deliver

    def classify_tx(self, frame: bytearray) -> TxVerdict:
        out: list[bytes] = []
        with self._lock:
            try:
                verdict = self._classify(frame, out)
            except Exception:
                log.exception("NIC %s: services failed on a frame", self.config.mac)
                self.internal_errors += 1
                out.clear()
                verdict = TxVerdict.DROP
            if verdict is TxVerdict.FORWARD:
                self.forwarded += 1
            elif verdict is TxVerdict.CONSUMED:
                self.consumed += 1
        self._send(out)
        return verdict

    def poll(self) -> None:
        """Expire idle metadata connections and retransmit what is unacknowledged."""
        with self._lock:
            now = self._clock()
            out = [self._tcp_frame(peer, port, 80, r) for peer, port, r in self._tcp.poll(now)]
        self._send(out)

    # -- the decision -------------------------------------------------------

    def _send(self, frames: list[bytes]) -> None:
        if not frames:
            return
        deliver = self._deliver
        if deliver is not None:
            for frame in frames:
                deliver(frame)
        with self._lock:
            if deliver is None:
                self.replies_undelivered += len(frames)
            else:
                self.replies += len(frames)

    def _drop(self, reason: str) -> TxVerdict:
        """Count a dropped frame under *reason* and its kind (spoofed, malformed, policy)."""
        self.drops[reason] += 1
        kind = DROP_REASONS[reason]
        if kind == "spoofed":
            self.dropped_spoofed += 1
        elif kind == "malformed":
            self.dropped_malformed += 1
        else:
            self.dropped_policy += 1
        return TxVerdict.DROP

    def _classify(self, frame: bytearray, out: list[bytes]) -> TxVerdict:
        if len(frame) < pk.ETH_HLEN:
            return self._drop("short_frame")
        if frame[6:12] != self._mac:
            return self._drop("src_mac")
        ethertype = int.from_bytes(frame[12:14], "big")
        if ethertype in pk.VLAN_ETHERTYPES:
            return self._drop("vlan")
        if ethertype == pk.ETHERTYPE_ARP:
            return self._arp(bytes(frame[pk.ETH_HLEN :]), out)
        if ethertype == pk.ETHERTYPE_IPV4:
            if self._plain_ipv4(frame):
                verdict = TxVerdict.FORWARD
            else:
                verdict = self._ipv4(bytes(frame[pk.ETH_HLEN :]), out)
            router = self._router
            if verdict is TxVerdict.FORWARD and router is not None and frame[0:6] == self._card_mac:
                reason = router.route(frame)
                if reason is not None:
                    return self._drop(reason)
                self.routed += 1
            return verdict
        if ethertype == pk.ETHERTYPE_IPV6:
            reason = self._v6.check(bytes(frame[pk.ETH_HLEN :]))
            return TxVerdict.FORWARD if reason is None else self._drop(reason)
        return self._drop("ethertype")

    def _plain_ipv4(self, frame: bytearray) -> bool:
        """The fast path: IPv4 without options from the NIC's address to a peer, not DHCP.

        Reads header bytes in place (no copies); anything it is unsure of goes
        the full way through ``_ipv4``, which decides the same for these frames.
        """
        if len(frame) < 34 or frame[14] != 0x45 or self._ip is None:
            return False
        if frame[26:30] != self._ip:
            return False
        total = int.from_bytes(frame[16:18], "big")
        if not 20 <= total <= len(frame) - pk.ETH_HLEN:
            return False
        dst = frame[30:34]
        if dst == _METADATA or dst == self._gateway:  # the card's own services
            return False
        if frame[23] == pk.IPPROTO_UDP and not int.from_bytes(frame[20:22], "big") & 0x1FFF:
            ports = (frame[34:36], frame[36:38])
            return len(frame) >= 38 and total >= 24 and _DHCP_SERVER_PORT not in ports
        return True

    def _arp(self, payload: bytes, out: list[bytes]) -> TxVerdict:
        arp = parse_arp(payload)
        if arp is None:
            return self._drop("arp_malformed")
        if arp.sender_mac != self._mac or self._ip is None or arp.sender_ip != self._ip:
            return self._drop("arp_spoofed")
        if arp.target_ip not in self._answered:
            return TxVerdict.FORWARD
        if arp.op == ARP_REQUEST:
            out.append(
                build_arp_reply(
                    our_mac=self._card_mac, our_ip=arp.target_ip, to_mac=self._mac, to_ip=self._ip
                )
            )
        return TxVerdict.CONSUMED

    def _ipv4(self, payload: bytes, out: list[bytes]) -> TxVerdict:
        ip = pk.parse_ipv4(payload)
        if ip is None:
            return self._drop("ipv4_malformed")
        udp = pk.parse_udp(ip.payload) if ip.proto == pk.IPPROTO_UDP and not ip.fragment else None
        if ip.src == _ZERO:
            if udp is not None and udp.sport == 68 and udp.dport == 67:
                self._dhcp(udp.payload, out)
                return TxVerdict.CONSUMED
            return self._drop("ipv4_src")
        if self._ip is None or ip.src != self._ip:
            return self._drop("ipv4_src")
        if ip.dst == _METADATA:
            if ip.proto == pk.IPPROTO_TCP and not ip.fragment:
                self._metadata(ip, out)
            return TxVerdict.CONSUMED
        if ip.proto == pk.IPPROTO_UDP and ip.offset == 0 and len(ip.payload) >= 4:
            # the ports of a first fragment count too: DHCP never leaks, even in pieces
            if ip.payload[2:4] == _DHCP_SERVER_PORT:
                if udp is not None:
                    self._dhcp(udp.payload, out)
                return TxVerdict.CONSUMED
            if ip.payload[0:2] == _DHCP_SERVER_PORT:
                return self._drop("dhcp_server")
        if ip.dst == self._gateway and udp is not None and udp.dport == 53:
            self._dns(ip.src, udp.sport, udp.payload, out)
            return TxVerdict.CONSUMED
        return TxVerdict.FORWARD

    def _dns(self, peer: bytes, port: int, payload: bytes, out: list[bytes]) -> None:
        zone = self._zone
        reply = None if zone is None else dns.answer(payload, zone)
        if reply is None:
            return
        datagram = pk.build_udp(self._gateway, peer, 53, port, reply)
        packet = pk.build_ipv4(self._gateway, peer, pk.IPPROTO_UDP, datagram)
        out.append(pk.build_ethernet(self._mac, self._card_mac, pk.ETHERTYPE_IPV4, packet))

    def _dhcp(self, payload: bytes, out: list[bytes]) -> None:
        msg = parse_dhcp(payload)
        if msg is None or self._lease is None:
            return
        reply = answer(msg, self._lease)
        if reply is None:
            return
        src = self._server.packed
        datagram = pk.build_udp(src, reply.dst_ip, 67, 68, reply.payload)
        packet = pk.build_ipv4(src, reply.dst_ip, pk.IPPROTO_UDP, datagram)
        out.append(pk.build_ethernet(self._mac, self._card_mac, pk.ETHERTYPE_IPV4, packet))

    def _metadata(self, ip: pk.Ipv4Packet, out: list[bytes]) -> None:
        seg = pk.parse_tcp(ip.payload)
        if seg is None:
            return
        for reply in self._tcp.handle(ip.src, seg, self._clock()):
            out.append(self._tcp_frame(ip.src, seg.sport, seg.dport, reply))

    def _tcp_frame(self, peer: bytes, port: int, local_port: int, r: TcpReply) -> bytes:
        src = METADATA_IP.packed
        segment = pk.build_tcp(
            src,
            peer,
            sport=local_port,
            dport=port,
            seq=r.seq,
            ack=r.ack,
            flags=r.flags,
            window=r.window,
            payload=r.payload,
            mss=r.mss,
        )
        packet = pk.build_ipv4(src, peer, pk.IPPROTO_TCP, segment)
        return pk.build_ethernet(self._mac, self._card_mac, pk.ETHERTYPE_IPV4, packet)
