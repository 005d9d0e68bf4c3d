"""A vhost-user-blk disk is hot-plugged into a running guest over QMP, and removed.

How the test works: the guest boots (direct kernel boot, for speed) with one
cold-plugged disk (``/dev/vda``), two empty hot-plug slots (``hotplug_slots``,
``pcie-root-port`` devices) and a QMP socket, prints a marker and waits for
``/dev/vdb``.  Each disk is a real ``offload-blk`` on an image of seeded
random bytes.  Over QMP the test adds a client chardev for the second
back-end's socket and a ``vhost-user-blk-pci`` on the first root port (q35 in
QEMU 7.2 announces it to the guest through ACPI PCI hot-plug).
The guest reads the new disk's size, serial and first 64 KiB and prints them,
then waits for the disk to go away; the test issues ``device_del``, waits for
``DEVICE_DELETED`` and removes the chardev.  The guest reports the removal and
stays up until the test, having seen the event, writes a go marker into the
first sector of the cold disk's image (the guest polls it with O_DIRECT
reads); a guest that powered off first would take QEMU, and the event, with
it.  The guest then exits 0.  What it read must match the host's image.
"""

from __future__ import annotations

import hashlib
import random
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_agent.power.qemu import BlkDisk, hotplug_bus
from host_agent.power.qmp import QmpClient
from tests.conftest import QemuFactory
from tests.harness.offload_blk import OffloadBlkProcess
from tools.region.guest import EXIT_RE, command_output

pytestmark = pytest.mark.e2e

BOOT_TIMEOUT_S = 150.0
MIB = 1 << 20
SERIAL = "bmaas-hotplug-1"
GO = b"bmaas-go"

SCRIPT = r"""
wait_for() {  # wait_for CONDITION-COMMAND... : up to 120 s
  i=0
  until "$@"; do
    i=$((i + 1)); [ $i -le 1200 ] || { echo "timeout waiting for: $*"; return 1; }
    sleep 0.1
  done
}
echo vda_sectors=$(cat /sys/block/vda/size)
[ ! -e /sys/block/vdb ] && echo vdb_before=absent
echo hotplug-ready
wait_for test -b /dev/vdb
echo vdb_sectors=$(cat /sys/block/vdb/size)
echo vdb_serial=$(cat /sys/block/vdb/serial)
dd if=/dev/vdb of=/tmp/head bs=4096 count=16 iflag=direct 2>/dev/null
echo vdb_head=$(sha256sum /tmp/head | cut -d' ' -f1)
echo hotplug-wait-removal
wait_for test ! -e /sys/block/vdb
echo vdb_after=absent
# Stay up until the host has seen DEVICE_DELETED: it then writes GO to vda.
go() { [ "$(dd if=/dev/vda bs=512 count=1 iflag=direct 2>/dev/null | head -c 8)" = "bmaas-go" ]; }
wait_for go
"""


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for unix sockets (``tmp_path`` may be too long for AF_UNIX)."""
    path = Path(tempfile.mkdtemp(prefix="bh", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_vhost_user_blk_disk_is_hot_plugged_and_unplugged(
    qemu_server: QemuFactory, sock_dir: Path, tmp_path: Path
) -> None:
    backends = []
    for name, size in (("boot", 2 * MIB), ("hot", 4 * MIB)):
        image = tmp_path / f"{name}.img"
        image.write_bytes(random.Random(name).randbytes(size))
        backends.append(
            OffloadBlkProcess(
                socket_path=sock_dir / f"{name}.sock",
                image=image,
                serial=SERIAL if name == "hot" else None,
                log_path=tmp_path / f"{name}-offload-blk.log",
            )
        )
    cold, backend = backends
    data = backend.image.read_bytes()
    qmp_socket = sock_dir / "qmp.sock"
    try:
        for b in backends:
            await b.start()
        server = await qemu_server(
            script=SCRIPT,
            name="hotplug",
            disks=(BlkDisk(cold.socket_path),),
            qmp_socket=qmp_socket,
            hotplug_slots=2,
        )
        async with await QmpClient.connect(qmp_socket, timeout=30) as qmp:
            assert (await qmp.execute("query-status"))["status"] == "running"
            await server.wait_for_serial(r"hotplug-ready", timeout=BOOT_TIMEOUT_S)

            await qmp.execute(
                "chardev-add",
                id="hotblk0",
                backend={
                    "type": "socket",
                    "data": {
                        "addr": {"type": "unix", "data": {"path": str(backend.socket_path)}},
                        "server": False,
                        "reconnect": 1,
                    },
                },
            )
            await qmp.execute(
                "device_add",
                driver="vhost-user-blk-pci",
                id="hotdisk0",
                chardev="hotblk0",
                bus=hotplug_bus(0),
                **{"num-queues": 1},
            )
            peripherals = await qmp.execute("qom-list", path="/machine/peripheral")
            assert "hotdisk0" in {p["name"] for p in peripherals}

            await server.wait_for_serial(r"hotplug-wait-removal", timeout=BOOT_TIMEOUT_S)
            await qmp.execute("device_del", id="hotdisk0")
            deleted = await qmp.wait_event(
                "DEVICE_DELETED", data={"device": "hotdisk0"}, timeout=120
            )
            assert deleted.data["path"] == "/machine/peripheral/hotdisk0"
            await qmp.execute("chardev-remove", id="hotblk0")
            with cold.image.open("r+b") as f:
                f.write(GO)
            peripherals = await qmp.execute("qom-list", path="/machine/peripheral")
            assert "hotdisk0" not in {p["name"] for p in peripherals}
            chardevs = {c["label"] for c in await qmp.execute("query-chardev")}
            assert "hotblk0" not in chardevs

            match = await server.wait_for_serial(EXIT_RE.pattern, timeout=BOOT_TIMEOUT_S)
    finally:
        for b in backends:
            await b.stop()
    output = command_output(server.serial_text())
    assert match.group(1) == "0", output
    values = dict(re.findall(r"^(\w+)=(.*?)\s*$", output, re.M))
    assert values.get("vda_sectors") == str(2 * MIB // 512), output
    assert values.get("vdb_before") == "absent", output
    assert values.get("vdb_sectors") == str(len(data) // 512), output
    assert values.get("vdb_serial") == SERIAL, output
    assert values.get("vdb_head") == hashlib.sha256(data[: 64 * 1024]).hexdigest(), output
    assert values.get("vdb_after") == "absent", output
    assert "front-end connected" in backend.log_text()
