"""NicServices against a real Linux network stack: busybox udhcpc and curl through a TAP.

The test plays the virtio-net device: a thread reads every frame the
namespace's stack sends out of ``tapsvc`` (standing in for the guest's NIC),
passes it to ``NicServices.classify_tx`` and writes what the services
deliver back into the TAP.  Forwarded frames go nowhere (no VPC here).
Inside the namespace, busybox udhcpc must get the NIC's lease (address,
router, MTU, DNS, hostname), and curl must read the metadata service at
169.254.169.254 through the default route the lease installed, with an
IMDSv2 session token (a GET without one gets 401).
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import threading
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest
from pyroute2 import IPRoute
from pyroute2.netns import setns

from offload.network.hook import TxVerdict
from offload.network.services import InstanceMetadata, NicConfig, NicServices
from tools.region.netns import NetNamespace

pytestmark = pytest.mark.integration

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
TAP = "tapsvc"

SCRIPT = """#!/bin/sh
# udhcpc event script: apply the lease and record what it said.
env | grep -E '^(ip|mask|router|dns|hostname|mtu|lease)=' > "$(dirname "$0")/lease.$1"
case "$1" in
  bound|renew)
    ip addr add "$ip/$mask" dev "$interface"
    ip link set "$interface" mtu "$mtu"
    for r in $router; do ip route add default via "$r" dev "$interface"; done
    ;;
esac
"""


def open_tap(ns: NetNamespace) -> int:
    """A TAP created inside *ns* (from a thread that enters it), its fd usable from anywhere."""
    result: list[int | BaseException] = []

    def create() -> None:
        try:
            setns(ns.name, flags=0)
            fd = os.open("/dev/net/tun", os.O_RDWR)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", TAP.encode(), IFF_TAP | IFF_NO_PI))
            result.append(fd)
        except BaseException as exc:  # reported to the test thread
            result.append(exc)

    thread = threading.Thread(target=create)
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


class Card:
    """The device's role: TAP frames -> classify_tx, delivered frames -> TAP."""

    def __init__(self, fd: int, services: NicServices) -> None:
        self.fd, self.services = fd, services
        self.verdicts: list[TxVerdict] = []
        self._stop = threading.Event()
        services.attach(lambda frame: os.write(fd, frame) and None)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                self.verdicts.append(self.services.classify_tx(os.read(self.fd, 65536)))
            self.services.poll()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.fd)


@pytest.fixture
def card(netns: Callable[[str], NetNamespace]) -> Iterator[tuple[NetNamespace, Card]]:
    ns = netns("svc")
    config = NicConfig(
        mac="52:54:00:aa:bb:01",
        ip=IPv4Interface("10.9.0.17/24"),
        gateway=IPv4Address("10.9.0.1"),
        dns=(IPv4Address("10.9.0.2"),),
        hostname="tenant-vm",
        mtu=1450,
        metadata=InstanceMetadata(
            instance_id="i-0badc0ffee",
            hostname="tenant-vm",
            local_ipv4="10.9.0.17",
            mac="52:54:00:aa:bb:01",
            public_keys=("ssh-ed25519 AAAAC3Nza tenant@example",),
            user_data=b"#!/bin/sh\necho hello\n" * 200,
        ),
    )
    fd = open_tap(ns)
    with IPRoute(netns=ns.name, flags=0, groups=0) as ipr:
        index = ipr.link_lookup(ifname=TAP)[0]
        ipr.link("set", index=index, address=config.mac, state="up")
    card = Card(fd, NicServices(config))
    yield ns, card
    card.close()


def test_udhcpc_and_curl_through_a_tap(card: tuple[NetNamespace, Card], tmp_path: Path) -> None:
    ns, dev = card
    script = tmp_path / "udhcpc.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    run = ns.run(
        "busybox",
        "udhcpc",
        "-f",
        "-q",
        "-n",
        "-t",
        "3",
        "-T",
        "1",
        "-i",
        TAP,
        "-s",
        str(script),
        check=False,
    )
    assert run.returncode == 0, run.stderr
    lease = dict(line.split("=", 1) for line in (tmp_path / "lease.bound").read_text().split())
    assert lease["ip"] == "10.9.0.17" and lease["mask"] == "24"
    assert lease["router"] == "10.9.0.1" and lease["dns"] == "10.9.0.2"
    assert lease["mtu"] == "1450" and lease["hostname"] == "tenant-vm"
    assert "10.9.0.17/24" in ns.run("ip", "-o", "addr", "show", TAP).stdout

    def curl(path: str, *args: str) -> str:
        url = f"http://169.254.169.254{path}"
        out = ns.run("curl", "-sS", "--max-time", "10", *args, url, check=False)
        assert out.returncode == 0, out.stderr
        return out.stdout

    # IMDSv2 (required by default): a session token first
    token = curl("/latest/api/token", "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60")
    header = ("-H", f"X-aws-ec2-metadata-token: {token}")
    assert curl("/latest/meta-data/instance-id") == "unauthorized\n"

    assert curl("/latest/meta-data/instance-id", *header) == "i-0badc0ffee"
    assert curl("/latest/meta-data/public-keys/0/openssh-key", *header).startswith("ssh-ed25519")
    assert curl("/latest/user-data", *header) == "#!/bin/sh\necho hello\n" * 200  # many segments
    status = ns.run(
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        *header,
        "http://169.254.169.254/nope",
        check=False,
    ).stdout
    assert status == "404"
    # the card answered the gateway's ARP; nothing of the above left the NIC
    neigh = ns.run("ip", "neigh", "show", "10.9.0.1").stdout
    assert "02:bc:a1:00:00:01" in neigh
    svc = dev.services
    assert svc.dropped_spoofed == 0 and svc.internal_errors == 0
    assert svc.consumed >= 10 and svc.replies >= 10
