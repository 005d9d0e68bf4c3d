"""Checksum and segmentation offload through ``offload-net``, a real TAP and real kernel TCP.

``offload-net`` runs in namespace A, its TAP ``tapo0`` there with address
10.81.0.1 and a permanent neighbour entry for the guest (10.81.0.2).  The test
plays the guest with ``offload.testing.net`` (offloads negotiated) and
``offload.testing.tcp``.  Namespace A forwards to namespace B over a veth
pair whose TSO, GSO and checksum offloads are switched off, so a TSO frame
from the guest is cut into real segments with real checksums by A's kernel
and B's TCP verifies every one of them.

* guest -> B: 1 MiB sent as 64,240-byte TSO frames (NEEDS_CSUM, GSO_TCPV4,
  gso_size 1460, only the pseudo-header sum in the checksum field) reaches a
  kernel socket in B with the same sha256;
* A -> guest: 1 MiB from a kernel socket on A (the TAP itself, TSO and
  partial checksums allowed by TUNSETOFFLOAD) reaches the guest with the
  same sha256, and frames larger than the MTU arrive: GSO frames spread
  over several 2 KiB RX buffers (``num_buffers``).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyroute2.netns import setns

from offload.testing.net import NetFeature, VhostUserNetFrontend
from offload.testing.tcp import GuestTcp
from tools.region.netns import NetNamespace

pytestmark = pytest.mark.integration

OFFLOAD_NET = Path(sys.executable).with_name("offload-net")
GUEST_MAC = "52:54:00:aa:0f:01"
GUEST_IP = "10.81.0.2"
TAP_IP = "10.81.0.1"
PEER_IP = "10.82.0.2"
DATA = os.urandom(1 << 20)


def in_namespace(ns: NetNamespace, make: Callable[[], socket.socket]) -> socket.socket:
    """A socket created inside ``ns`` (from a thread that enters it), usable from anywhere."""
    result: list[socket.socket | BaseException] = []

    def run() -> None:
        try:
            setns(ns.name, flags=0)
            result.append(make())
        except BaseException as exc:  # handed to the test thread
            result.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def listener(ns: NetNamespace, address: str) -> socket.socket:
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((address, 0))
        sock.listen(1)
        sock.settimeout(60)
        return sock

    return in_namespace(ns, make)


class Card:
    """offload-net in namespace A, the TAP addressed, namespace B behind a veth."""

    def __init__(self, a: NetNamespace, b: NetNamespace, sock_dir: Path) -> None:
        self.a, self.b = a, b
        self.socket = sock_dir / "nic.sock"
        self.log = sock_dir / "offload-net.log"
        argv = ["ip", "netns", "exec", a.name, str(OFFLOAD_NET), "--socket", str(self.socket)]
        argv += ["--tap", "tapo0", "--mac", GUEST_MAC]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log)
        # the socket is bound after the TAP is open: wait for the process to get there
        wait = subprocess.run(
            ["timeout", "20", "sh", "-c", f'until [ -S "{self.socket}" ]; do sleep 0.05; done'],
            check=False,
        )
        assert wait.returncode == 0, self.log.read_text()
        a.run("ip", "addr", "add", f"{TAP_IP}/24", "dev", "tapo0")
        a.run(
            "ip", "neigh", "add", GUEST_IP, "lladdr", GUEST_MAC, "dev", "tapo0", "nud", "permanent"
        )
        a.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        a.run("ip", "link", "add", "vto0", "type", "veth", "peer", "name", "vto1", "netns", b.name)
        a.run("ip", "addr", "add", "10.82.0.1/24", "dev", "vto0")
        a.run("ip", "link", "set", "vto0", "up")
        b.run("ip", "addr", "add", f"{PEER_IP}/24", "dev", "vto1")
        b.run("ip", "link", "set", "vto1", "up")
        b.run("ip", "route", "add", "10.81.0.0/24", "via", "10.82.0.1")
        for ns, dev in ((a, "vto0"), (b, "vto1")):
            ns.run("ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off")
        link = json.loads(a.run("ip", "-j", "link", "show", "tapo0").stdout)[0]
        self.tap_mac = bytes.fromhex(link["address"].replace(":", ""))

    def close(self) -> None:
        self.proc.terminate()
        assert self.proc.wait(10) == 0, self.log.read_text()
        assert "tapo0" not in self.a.run("ip", "-o", "link", "show").stdout


@pytest.fixture
def card(netns: Callable[[str], NetNamespace]) -> Iterator[Card]:
    with tempfile.TemporaryDirectory(prefix="bo", dir="/tmp") as d:
        c = Card(netns("tsoa"), netns("tsob"), Path(d))
        try:
            yield c
        finally:
            c.close()


def guest(fe: VhostUserNetFrontend, card: Card, peer_ip: str, port: int) -> GuestTcp:
    return GuestTcp(
        fe,
        mac=bytes.fromhex(GUEST_MAC.replace(":", "")),
        ip=socket.inet_aton(GUEST_IP),
        peer_mac=card.tap_mac,
        peer_ip=socket.inet_aton(peer_ip),
        peer_port=port,
    )


def test_tso_frames_reach_a_kernel_socket_as_checksummed_segments(card: Card) -> None:
    server = listener(card.b, PEER_IP)
    got: list[bytes] = []

    def receive() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(60)
            digest, total = hashlib.sha256(), 0
            while chunk := conn.recv(1 << 16):
                digest.update(chunk)
                total += len(chunk)
            got.append(digest.digest() + total.to_bytes(8, "big"))

    thread = threading.Thread(target=receive)
    thread.start()
    try:
        with VhostUserNetFrontend(str(card.socket), queue_size=256, offloads=True) as fe:
            for bit in (NetFeature.CSUM, NetFeature.HOST_TSO4, NetFeature.GUEST_TSO4):
                assert fe.has(bit)
            fe.post_rx(count=256)
            tcp = guest(fe, card, PEER_IP, server.getsockname()[1])
            tcp.connect()
            tcp.send(DATA, tso=True)
            tcp.close()
            # 1 MiB in 64,240-byte pieces: 17 TSO frames (+ SYN, ACK, FIN), not 719 segments
            assert tcp.frames_sent <= 17 + 3 + 10  # a few retransmissions at most
    finally:
        thread.join(60)
        server.close()
    assert got == [hashlib.sha256(DATA).digest() + len(DATA).to_bytes(8, "big")]


def test_gso_frames_from_the_tap_reach_the_guest_over_merged_buffers(card: Card) -> None:
    server = listener(card.a, TAP_IP)

    def send() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(DATA)

    thread = threading.Thread(target=send)
    thread.start()
    try:
        with VhostUserNetFrontend(str(card.socket), queue_size=256, offloads=True) as fe:
            assert fe.mergeable and fe.has(NetFeature.GUEST_TSO4)
            fe.post_rx(count=256)
            tcp = guest(fe, card, TAP_IP, server.getsockname()[1])
            tcp.connect()
            data = tcp.receive(len(DATA))
    finally:
        thread.join(60)
        server.close()
    assert hashlib.sha256(data).digest() == hashlib.sha256(DATA).digest()
    assert tcp.largest_received > 2048  # a GSO frame, spread over several 2 KiB buffers
