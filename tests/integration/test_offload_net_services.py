"""The card's services through a real ``offload-net``, a real Linux stack playing the guest.

Two namespaces: the *card* namespace runs ``offload-net`` (its TAP ``tapc``
is the VPC side), the *guest* namespace holds ``tapg``, the guest's NIC.  A
relay thread plays the server's virtio-net driver with
``offload.testing.net``: every frame the guest namespace sends out of
``tapg`` goes onto the TX ring, every frame on the RX ring is written back
into ``tapg``.  So busybox udhcpc, curl, wget and nc in the guest namespace
talk to the card exactly as a guest would, and a sniffer on ``tapc`` sees
what the card forwarded to the VPC.  Crafted frames (spoofed IPv6, NDP,
foreign ethertypes) are put on the TX ring by the relay as a hostile guest
driver would.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyroute2.netns import setns

from offload.testing.errors import FrontendTimeout
from offload.testing.net import VhostUserNetFrontend
from tools.region.netns import NetNamespace

pytestmark = pytest.mark.integration

OFFLOAD_NET = Path(sys.executable).with_name("offload-net")
MAC = "52:54:00:5e:00:17"
MAC_B = bytes.fromhex(MAC.replace(":", ""))
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
ETH_P_ALL = 0x0003
# The busybox guests of the demo, the e2e tests and bench/vpc.py read metadata this way.
IMDS = r"""
imds_token=$(printf 'PUT /latest/api/token HTTP/1.0\r\n%s\r\n\r\n' \
  'X-aws-ec2-metadata-token-ttl-seconds: 300' | nc 169.254.169.254 80 | tail -n 1)
imds() {
  wget -q -O - --header "X-aws-ec2-metadata-token: $imds_token" "http://169.254.169.254/latest/$1"
}
"""


def in_netns(ns: NetNamespace, make: Callable[[], int]) -> int:
    """An fd made inside *ns* (by a thread that entered it), usable from anywhere."""
    result: list[int | BaseException] = []

    def run() -> None:
        try:
            setns(ns.name, flags=0)
            result.append(make())
        except BaseException as exc:  # reported to the test thread
            result.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def open_sniffer(ifname: str) -> int:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((ifname, 0))
    return sock.detach()


class Relay:
    """The guest's virtio-net driver: tapg <-> the front-end's rings."""

    def __init__(self, tap_fd: int, fe: VhostUserNetFrontend) -> None:
        self.tap_fd, self.fe = tap_fd, fe
        self._inject: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        fe.post_rx(count=32)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def inject(self, frame: bytes) -> None:
        """Put *frame* on the TX ring as it is (a hostile driver)."""
        with self._lock:
            self._inject.append(frame)

    def _run(self) -> None:
        while not self._stop.is_set():
            ready = select.select([self.tap_fd], [], [], 0.01)[0]
            out: list[bytes] = []
            if ready:
                out.append(os.read(self.tap_fd, 65536))
            with self._lock:
                out += self._inject
                self._inject.clear()
            for frame in out:
                self.fe.send(frame)
            with contextlib.suppress(FrontendTimeout):
                for frame in self.fe.receive(timeout=0):
                    os.write(self.tap_fd, frame)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Card:
    def __init__(self, guest: NetNamespace, card: NetNamespace, relay: Relay, stats: Path) -> None:
        self.guest, self.card, self.relay, self.stats_file = guest, card, relay, stats

    def stats(self) -> dict[str, int]:
        """The services' counters offload-net last wrote (it writes every second)."""
        services: dict[str, int] = json.loads(self.stats_file.read_text())["services"]
        return services

    def drops(self) -> dict[str, int]:
        """The drops by reason offload-net last wrote."""
        drops: dict[str, int] = json.loads(self.stats_file.read_text())["drops"]
        return drops

    def wait_drops(self, check: Callable[[dict[str, int]], bool]) -> dict[str, int]:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError, ValueError, KeyError):
                drops = self.drops()
                if check(drops):
                    return drops
            assert time.monotonic() < deadline, self.stats_file.read_text()
            time.sleep(0.1)

    def sh(self, script: str) -> subprocess.CompletedProcess[str]:
        return self.guest.run("busybox", "sh", "-c", script, check=False)


@pytest.fixture
def card(netns: Callable[[str], NetNamespace], tmp_path: Path) -> Iterator[Card]:
    guest_ns, card_ns = netns("guest"), netns("card")
    meta = tmp_path / "meta.json"
    meta.write_text(
        json.dumps({"instance_id": "i-0fee1", "hostname": "vm1", "user_data": "10.9.0.99 x"})
    )
    stats = tmp_path / "nic.stats"
    log = (tmp_path / "offload-net.log").open("wb")
    with tempfile.TemporaryDirectory(prefix="bs", dir="/tmp") as d:
        sock = Path(d) / "nic.sock"
        argv = ["ip", "netns", "exec", card_ns.name, str(OFFLOAD_NET), "--socket", str(sock)]
        argv += ["--tap", "tapc", "--mac", MAC, "--ip", "10.9.0.17/24", "--gateway", "10.9.0.1"]
        argv += ["--ipv6", "fd00:9::17/64", "--metadata", str(meta), "--stats", str(stats)]
        proc = subprocess.Popen(argv, stdout=log, stderr=log)
        tap_fd = -1
        relay: Relay | None = None
        try:
            deadline = time.monotonic() + 20
            while not sock.exists():
                assert proc.poll() is None, (tmp_path / "offload-net.log").read_text()
                assert time.monotonic() < deadline
                time.sleep(0.05)
            tap_fd = in_netns(guest_ns, lambda: open_tap("tapg"))
            guest_ns.run("ip", "link", "set", "tapg", "address", MAC, "up")
            card_ns.run("ip", "link", "set", "tapc", "up")
            fe = VhostUserNetFrontend(str(sock))
            relay = Relay(tap_fd, fe)
            yield Card(guest_ns, card_ns, relay, stats)
        finally:
            if relay is not None:
                relay.close()
                relay.fe.close()
            if tap_fd >= 0:
                os.close(tap_fd)
            proc.terminate()
            assert proc.wait(10) == 0
            log.close()


def dhcp(card: Card) -> None:
    run = card.sh("udhcpc -i tapg -f -q -n -t 5 -T 1 -s /dev/null >/dev/null 2>&1; echo $?")
    assert run.stdout.strip() == "0", run.stderr
    card.guest.run("ip", "addr", "add", "10.9.0.17/24", "dev", "tapg")
    card.guest.run("ip", "route", "add", "default", "via", "10.9.0.1")


def test_imdsv2_through_offload_net(card: Card) -> None:
    dhcp(card)
    url = "http://169.254.169.254/latest/meta-data/instance-id"
    code = card.guest.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url, check=False)
    assert code.stdout == "401"  # required is offload-net's default
    token = card.guest.run(
        "curl", "-sS", "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 30",
        "http://169.254.169.254/latest/api/token",
    ).stdout  # fmt: skip
    assert len(token) == 43
    got = card.guest.run("curl", "-sS", "-H", f"X-aws-ec2-metadata-token: {token}", url).stdout
    assert got == "i-0fee1"
    forged = card.guest.run(
        "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
        "-H", "X-aws-ec2-metadata-token: " + "A" * 43, url, check=False,
    ).stdout  # fmt: skip
    assert forged == "401"
    # what the busybox guests do: refused without a token, the token by nc, the GETs by wget
    v1 = card.sh("wget -O /dev/null http://169.254.169.254/latest/meta-data/ 2>&1")
    assert "server returned error: HTTP/1.1 401 Unauthorized" in v1.stdout
    run = card.sh(IMDS + 'echo "$(imds meta-data/instance-id) $(imds user-data)"')
    assert run.stdout.strip() == "i-0fee1 10.9.0.99 x", run.stderr


OTHER_MAC = bytes.fromhex("525400999999")
NIC6 = socket.inet_pton(socket.AF_INET6, "fd00:9::17")
NIC_LL6 = socket.inet_pton(socket.AF_INET6, "fe80::5054:ff:fe5e:17")  # EUI-64 of MAC
PEER6 = socket.inet_pton(socket.AF_INET6, "fd00:9::99")
CARD_SIDE6 = socket.inet_pton(socket.AF_INET6, "fd00:9::1")


def eth6(packet: bytes, ethertype: int = 0x86DD) -> bytes:
    return b"\x33\x33\x00\x00\x00\x01" + MAC_B + ethertype.to_bytes(2, "big") + packet


def ip6(payload: bytes, nh: int, src: bytes, dst: bytes = CARD_SIDE6) -> bytes:
    return struct.pack("!IHBB", 6 << 28, len(payload), nh, 255) + src + dst + payload


def udp6(marker: bytes, src: bytes) -> bytes:
    return eth6(ip6(struct.pack("!HHHH", 4000, 4001, 8 + len(marker), 0) + marker, 17, src))


def na(target: bytes, mac: bytes = MAC_B) -> bytes:
    body = bytes((136, 0, 0, 0, 0x20, 0, 0, 0)) + target + bytes((2, 1)) + mac
    return eth6(ip6(body, 58, NIC_LL6))


def sniff(fd: int, seconds: float) -> list[bytes]:
    """Frames with the NIC's source MAC seen on tapc (what the card forwarded)."""
    frames: list[bytes] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            frame = os.read(fd, 65536)
            if frame[6:12] == MAC_B:
                frames.append(frame)
    return frames


def test_ipv6_and_ethertypes_guarded_through_offload_net(card: Card) -> None:
    sniffer = in_netns(card.card, lambda: open_sniffer("tapc"))
    try:
        # the real kernels first: the guest's own IPv6 (NDP from its link-local) passes
        card.card.run("ip", "addr", "add", "fd00:9::1/64", "dev", "tapc", "nodad")
        card.guest.run("ip", "addr", "add", "fd00:9::17/64", "dev", "tapg", "nodad")
        ping = card.guest.run("ping", "-6", "-c", "2", "-W", "5", "fd00:9::1", check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        # a spoofed source address from the real stack does not
        card.guest.run("ip", "addr", "add", "fd00:9::99/64", "dev", "tapg", "nodad")
        spoof = "ping -6 -c 2 -W 2 -I fd00:9::99 fd00:9::1"
        assert card.guest.run(*spoof.split(), check=False).returncode != 0
        before = card.wait_drops(lambda s: s.get("ipv6_src", 0) >= 2)
        # then a hostile driver's frames
        card.relay.inject(udp6(b"GOOD-GLOBAL", NIC6))
        card.relay.inject(udp6(b"GOOD-LINKLOCAL", NIC_LL6))
        card.relay.inject(udp6(b"SPOOF-SRC", PEER6))
        card.relay.inject(na(PEER6))  # claims the peer's address
        card.relay.inject(na(NIC6, OTHER_MAC))  # points the NIC's address at another MAC
        card.relay.inject(eth6(ip6(bytes((134,)) + bytes(15), 58, NIC_LL6)))  # a router ad
        card.relay.inject(eth6(b"ETHERTYPE-88B5" + bytes(40), 0x88B5))
        card.relay.inject(eth6(b"ETHERTYPE-LLDP" + bytes(40), 0x88CC))
        frames = sniff(sniffer, 3)
    finally:
        os.close(sniffer)
    seen = b"\n".join(frames)
    assert b"GOOD-GLOBAL" in seen and b"GOOD-LINKLOCAL" in seen
    for marker in (b"SPOOF-SRC", b"ETHERTYPE-88B5", b"ETHERTYPE-LLDP"):
        assert marker not in seen
    for frame in frames:
        assert frame[12:14] in (b"\x08\x00", b"\x08\x06", b"\x86\xdd")
        if frame[12:14] == b"\x86\xdd":
            assert frame[22:38] in (NIC6, NIC_LL6, bytes(16))
            if frame[54] == 136:  # an advertisement: for the NIC, with its MAC
                assert frame[62:78] in (NIC6, NIC_LL6) and OTHER_MAC not in frame
            assert frame[54] not in (134, 137)

    def counted(s: dict[str, int]) -> bool:
        return (
            all(
                s.get(reason, 0) - before.get(reason, 0) >= 1
                for reason in ("ndp_target", "ndp_lladdr", "ndp_router")
            )
            and s.get("ethertype", 0) - before.get("ethertype", 0) >= 2
        )

    drops = card.wait_drops(counted)
    assert drops["ipv6_src"] >= 3  # the spoofed pings and SPOOF-SRC
    assert "ipv6_disabled" not in drops
