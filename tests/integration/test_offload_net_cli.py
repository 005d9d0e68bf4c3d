"""``offload-net`` driven through the test front-end, with a real TAP in a namespace.

The test starts ``offload-net`` inside a fresh namespace (so its TAP lives
there), gives the TAP an address, and plays the guest with
``offload.testing.net``: it transmits an ARP request for the TAP's address
and expects the kernel's ARP reply back on its RX ring, with mergeable
buffers and the MAC it was given.  The TAP is created by offload-net and
must be gone after SIGTERM.  Bad arguments fail with one line and exit 2.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from offload.testing.net import VhostUserNetFrontend
from tools.region.netns import NetNamespace

pytestmark = pytest.mark.integration

OFFLOAD_NET = Path(sys.executable).with_name("offload-net")
GUEST_MAC = bytes.fromhex("525400aa0001")
GUEST_IP = socket.inet_aton("10.79.0.2")
HOST_IP = socket.inet_aton("10.79.0.1")


@pytest.fixture
def sock_path() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bi", dir="/tmp") as d:
        yield Path(d) / "nic.sock"


def arp_request() -> bytes:
    eth = b"\xff" * 6 + GUEST_MAC + b"\x08\x06"
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + GUEST_MAC + GUEST_IP + bytes(6) + HOST_IP
    return eth + arp


def test_frames_cross_the_tap_both_ways(
    netns: Callable[[str], NetNamespace], sock_path: Path, tmp_path: Path
) -> None:
    ns = netns("nic")
    log = (tmp_path / "offload-net.log").open("wb")
    argv = ["ip", "netns", "exec", ns.name, str(OFFLOAD_NET), "--socket", str(sock_path)]
    argv += ["--tap", "tapi0", "--mac", "52:54:00:aa:00:01"]
    proc = subprocess.Popen(argv, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while not sock_path.exists():
            assert proc.poll() is None, (tmp_path / "offload-net.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ns.run("ip", "addr", "add", "10.79.0.1/24", "dev", "tapi0")
        with VhostUserNetFrontend(str(sock_path)) as fe:
            assert fe.mergeable
            fe.post_rx()
            replies: list[bytes] = []
            for _ in range(20):  # the kernel may first send its own IPv6/ARP chatter
                fe.send(arp_request())
                frames = fe.receive(timeout=2)
                replies += [f for f in frames if f[12:14] == b"\x08\x06" and f[20:22] == b"\0\2"]
                if replies:
                    break
            assert replies, "no ARP reply from the TAP's kernel side"
            reply = replies[0]
            assert reply[:6] == GUEST_MAC  # addressed to the guest
            assert reply[28:32] == HOST_IP and reply[38:42] == GUEST_IP
        neigh = ns.run("ip", "neigh", "show", "dev", "tapi0").stdout
        assert "52:54:00:aa:00:01" in neigh
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        log.close()
    assert "tapi0" not in ns.run("ip", "-o", "link", "show").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tap", "t0", "--mac", "zz"], "not a MAC address"),
        (["--tap", "t0", "--mac", "03:00:00:00:00:01"], "multicast"),
        (["--tap", "t0", "--mac", "02:00:00:00:00:01", "--gateway", "10.0.0.1"], "need --ip"),
        (["--tap", "t0", "--mac", "02:00:00:00:00:01", "--ip", "nonsense"], "IPv4"),
        (["--tap", "t0", "--mac", "02:00:00:00:00:01", "--queues", "0"], "not in 1.."),
    ],
)
def test_bad_arguments_fail_with_one_line(args: list[str], message: str, sock_path: Path) -> None:
    result = subprocess.run(
        [str(OFFLOAD_NET), "--socket", str(sock_path), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("offload-net: error:") and message in lines[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"instance-id": "i-1"}', "unknown key 'instance-id'"),
        ('{"instance_id": "i-1", "user_data": 5}', "user_data must be a string, not int"),
        ('{"public_keys": "ssh-ed25519 AAAA"}', "public_keys must be a list of strings"),
        ("[]", "not a JSON object"),
    ],
)
def test_bad_metadata_file_fails_with_one_line(
    content: str, message: str, sock_path: Path, tmp_path: Path
) -> None:
    meta = tmp_path / "meta.json"
    meta.write_text(content)
    argv = [str(OFFLOAD_NET), "--socket", str(sock_path), "--tap", "tbadmeta0"]
    argv += ["--mac", "02:00:00:00:00:01", "--ip", "10.0.0.5/24", "--metadata", str(meta)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"offload-net: error: metadata {meta}: ")
    assert message in lines[0]
    # nothing was started: no socket, no TAP
    assert not sock_path.exists()
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert "tbadmeta0" not in links
