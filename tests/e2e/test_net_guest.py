"""A real Linux guest's virtio_net driver talks to ``offload-net`` through QEMU.

How the tests work: each test creates a network namespace (the emulated
host's side of the wire), starts ``offload-net`` inside it with ``ip netns
exec`` so the TAP it creates lives there, and boots the guest image under
QEMU with a default ``virtio-net-pci`` on a ``vhost-user`` netdev served on
that socket.  The guest configures a static address with busybox ``ip`` and
prints ``key=value`` lines that the test reads from the serial console.

The kernel command line has no ``pci=nomsi``, as a tenant's image would
not: QEMU 7.2 under TCG segfaults in ``vhost_net_start``
(``msix_set_vector_notifiers`` unmasking the vectors, before it sends
SET_FEATURES or SET_MEM_TABLE) for any vhost-user netdev with the default
control queue when the guest uses MSI-X, whatever the back-end offers, so
``build_argv`` gives every virtio-net device ``vectors=0`` under TCG: the
device has no MSI-X table and the guest's driver uses INTx, whose
interrupts go through QEMU's notifier handlers.  Under KVM (irqfd) the path
is not taken and the device keeps its MSI-X vectors.

Sockets live in a short directory under /tmp; logs in ``tmp_path``.  Every
process is stopped (SIGTERM, then SIGKILL) and every namespace removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from host_agent.power.qemu import NetNic, QemuServer
from tests.conftest import QemuFactory
from tools.region.guest import EXIT_RE, command_output
from tools.region.netns import NetNamespace

pytestmark = pytest.mark.e2e

TIMEOUT_S = 180.0
APPEND = "console=ttyS0 panic=-1 quiet"
OFFLOAD_NET = Path(sys.executable).with_name("offload-net")


class OffloadNet:
    """One ``offload-net`` process inside a namespace."""

    def __init__(self, ns: NetNamespace, *, socket: Path, tap: str, mac: str, log: Path) -> None:
        self.ns, self.socket, self.tap, self.mac, self.log = ns, socket, tap, mac, log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> OffloadNet:
        argv = ["ip", "netns", "exec", self.ns.name, str(OFFLOAD_NET)]
        argv += ["--socket", str(self.socket), "--tap", self.tap, "--mac", self.mac]
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=out)
        for _ in range(200):
            if self.socket.exists():
                return self
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"offload-net did not start:\n{self.log.read_text()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            return await proc.wait()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bn", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def offload_net(sock_dir: Path, tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    started: list[OffloadNet] = []

    async def start(ns: NetNamespace, *, name: str, tap: str, mac: str) -> OffloadNet:
        backend = OffloadNet(
            ns, socket=sock_dir / f"{name}.sock", tap=tap, mac=mac, log=tmp_path / f"{name}.log"
        )
        started.append(backend)
        return await backend.start()

    yield start
    for backend in started:
        with contextlib.suppress(ProcessLookupError):
            await backend.stop()


async def run_to_exit(server: QemuServer) -> dict[str, str]:
    match = await server.wait_for_serial(EXIT_RE.pattern, timeout=TIMEOUT_S)
    output = command_output(server.serial_text())
    assert match.group(1) == "0", f"guest script failed ({match.group(1)}):\n{output}"
    values: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            values[key] = value.strip()
    values["_output"] = output
    return values


def link(ns: NetNamespace, *argv: str) -> None:
    ns.run("ip", *argv)


async def test_guest_pings_the_host_side_of_its_tap(
    qemu_server: QemuFactory,
    offload_net: Callable[..., object],
    netns: Callable[[str], NetNamespace],
    tmp_path: Path,
) -> None:
    ns = netns("net")
    mac = "52:54:00:12:34:01"
    backend = await offload_net(ns, name="nic0", tap="tapg0", mac=mac)  # type: ignore[misc]
    assert isinstance(backend, OffloadNet)
    link(ns, "addr", "add", "10.77.0.1/24", "dev", "tapg0")
    script = (
        "ip link set eth0 up\n"
        "ip addr add 10.77.0.2/24 dev eth0\n"
        "echo mac=$(cat /sys/class/net/eth0/address)\n"
        "ping -c 3 -W 10 10.77.0.1 > /tmp/ping.txt\n"
        "echo received=$(grep -c 'bytes from 10.77.0.1' /tmp/ping.txt)\n"
        "echo carrier=$(cat /sys/class/net/eth0/carrier)\n"
        "echo operstate=$(cat /sys/class/net/eth0/operstate)\n"
    )
    server = await qemu_server(
        script=script, name="net", append=APPEND, nics=(NetNic(backend.socket, mac),)
    )
    values = await run_to_exit(server)
    assert values["mac"] == mac
    assert values["received"] == "3", values["_output"]
    assert values["carrier"] == "1" and values["operstate"] == "up"
    # The host side saw the guest: its MAC answered ARP on the TAP.
    neigh = ns.run("ip", "neigh", "show", "dev", "tapg0").stdout
    assert mac in neigh.lower()
    assert backend.alive()
    assert await backend.stop() == 0
    # offload-net created the TAP, so it removed it.
    assert "tapg0" not in ns.run("ip", "-o", "link", "show").stdout


async def test_two_guests_on_one_bridge_exchange_a_mebibyte(
    qemu_server: QemuFactory,
    offload_net: Callable[..., object],
    netns: Callable[[str], NetNamespace],
) -> None:
    ns = netns("br")
    link(ns, "link", "add", "br0", "type", "bridge")
    link(ns, "link", "set", "br0", "up")
    macs = {"a": "52:54:00:12:35:0a", "b": "52:54:00:12:35:0b"}
    backends = {}
    for name, mac in macs.items():
        backend = await offload_net(ns, name=f"nic{name}", tap=f"tap{name}", mac=mac)  # type: ignore[misc]
        assert isinstance(backend, OffloadNet)
        link(ns, "link", "set", f"tap{name}", "master", "br0")
        backends[name] = backend
    common = "ip link set eth0 up\n"
    receiver = common + (
        "ip addr add 10.78.0.10/24 dev eth0\n"
        "nc -l -p 5000 > /tmp/recv\n"
        "echo received_sha=$(sha256sum /tmp/recv | cut -d' ' -f1)\n"
        "echo received_bytes=$(wc -c < /tmp/recv)\n"
    )
    sender = common + (
        "ip addr add 10.78.0.11/24 dev eth0\n"
        "dd if=/dev/urandom of=/tmp/send bs=65536 count=16 2>/dev/null\n"
        "echo sent_sha=$(sha256sum /tmp/send | cut -d' ' -f1)\n"
        "i=0; until ping -c 1 -W 2 10.78.0.10 >/dev/null; do i=$((i+1)); [ $i -lt 60 ]; done\n"
        "echo pinged=yes\n"
        "sleep 2\n"
        "nc -w 5 10.78.0.10 5000 < /tmp/send\n"
    )
    a = await qemu_server(
        script=receiver, name="a", append=APPEND, nics=(NetNic(backends["a"].socket, macs["a"]),)
    )
    b = await qemu_server(
        script=sender, name="b", append=APPEND, nics=(NetNic(backends["b"].socket, macs["b"]),)
    )
    sent = await run_to_exit(b)
    got = await run_to_exit(a)
    assert sent["pinged"] == "yes"
    assert got["received_bytes"] == str(1 << 20)
    assert got["received_sha"] == sent["sent_sha"]
    assert all(backend.alive() for backend in backends.values())
