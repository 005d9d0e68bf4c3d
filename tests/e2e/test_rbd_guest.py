"""A real Linux guest on a disk in Ceph: ``offload-blk --rbd`` under QEMU's vhost-user-blk.

One guest run does it all (guests under TCG are slow): 8 MiB written and read
back O_DIRECT; scattered 4 KiB blocks written one by one (O_DIRECT + fsync)
while the test SIGKILLs the back-end holding requests it took and did not
complete (``kill_with_requests_in_flight``) and restarts it on the same socket
(the new process waits out the dead one's watch, breaks its stale lock, and
QEMU hands it the inflight region to resubmit); then the image is grown in
the cluster and the back-end gets SIGHUP, and the guest sees the new size and
writes past the old end.  The guest prints checksums; the host checks the same
bytes in the RBD image itself, and that nothing outside the written ranges
changed.
"""

from __future__ import annotations

import random
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from host_agent.power.qemu import BlkDisk
from tests.conftest import QemuFactory
from tests.e2e.test_blk_guest import (
    BLOCK,
    BOOT_AND_RUN_TIMEOUT_S,
    MIB,
    PRELUDE,
    SECTOR,
    pattern,
    run_to_exit,
    sha256,
    unchanged_outside,
)
from tests.harness.offload_blk import OffloadBlkProcess, kill_with_requests_in_flight
from tools.region.ceph import CephCluster

pytestmark = pytest.mark.e2e


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def rbd_backend(
    ceph: CephCluster, rbd_image: Callable[[int], str], sock_dir: Path, tmp_path: Path
) -> AsyncIterator[tuple[str, OffloadBlkProcess]]:
    """A 16 MiB RBD image filled with seeded bytes, served by ``offload-blk --rbd``."""
    name = rbd_image(16 * MIB)
    ceph.write_image(name, 0, random.Random(14).randbytes(16 * MIB))
    backend = OffloadBlkProcess(
        socket_path=sock_dir / "vol0.sock",
        rbd=f"{ceph.pool}/{name}",
        ceph_conf=ceph.conf_path,
        log_path=tmp_path / "vol0-offload-blk.log",
    )
    await backend.start(timeout=60)
    yield name, backend
    await backend.stop()


async def test_guest_on_rbd_survives_a_backend_crash_and_sees_a_resize(
    qemu_server: QemuFactory, rbd_backend: tuple[str, OffloadBlkProcess], ceph: CephCluster
) -> None:
    name, backend = rbd_backend
    size, new_size = 16 * MIB, 24 * MIB
    original = ceph.read_image(name, 0, size)
    big_len = 8 * MIB
    blocks = random.Random(7).sample(range(big_len // BLOCK, size // BLOCK), 60)
    kill_at = 20
    tail_blocks = 16  # written past the old end after the resize

    script = PRELUDE + (
        f"q dd if=/dev/urandom of=/tmp/a bs=65536 count={big_len // 65536}\n"
        f"q dd if=/tmp/a of=/dev/vda bs=65536 oflag=direct conv=notrunc,fsync\n"
        f"q dd if=/dev/vda of=/tmp/a.back bs=65536 count={big_len // 65536} iflag=direct\n"
        "echo a_written=$(sha /tmp/a)\n"
        "echo a_read=$(sha /tmp/a.back)\n"
        "rm /tmp/a /tmp/a.back\n"
        "k=0\n"
        f"for off in {' '.join(map(str, blocks))}; do\n"
        '  yes "bmaas-rbd k=$k" | head -c 4096 > /tmp/blk\n'
        "  q dd if=/tmp/blk of=/dev/vda bs=4096 seek=$off oflag=direct conv=notrunc,fsync\n"
        "  k=$((k + 1))\n"
        "  echo progress=$k\n"
        "done\n"
        ": > /tmp/scat\n"
        f"for off in {' '.join(map(str, blocks))}; do\n"
        "  q dd if=/dev/vda of=/tmp/one bs=4096 skip=$off count=1 iflag=direct\n"
        "  cat /tmp/one >> /tmp/scat\n"
        "done\n"
        "echo scat_read=$(sha /tmp/scat)\n"
        "old=$(cat /sys/block/vda/size)\n"
        "echo size_before=$old\n"
        "i=0\n"
        'while [ "$(cat /sys/block/vda/size)" = "$old" ]; do\n'
        "  i=$((i + 1))\n"
        "  if [ $i -gt 300 ]; then echo resize=timeout; exit 1; fi\n"
        "  sleep 0.2\n"
        "done\n"
        "new=$(cat /sys/block/vda/size)\n"
        "echo size_after=$new\n"
        f"q dd if=/dev/urandom of=/tmp/t bs=4096 count={tail_blocks}\n"
        f"seek=$(( new / 8 - {tail_blocks} ))\n"
        "q dd if=/tmp/t of=/dev/vda bs=4096 seek=$seek oflag=direct conv=notrunc,fsync\n"
        f"q dd if=/dev/vda of=/tmp/t.back bs=4096 skip=$seek count={tail_blocks} iflag=direct\n"
        "echo tail_written=$(sha /tmp/t)\n"
        "echo tail_read=$(sha /tmp/t.back)\n"
    )
    server = await qemu_server(script=script, name="rbd", disks=(BlkDisk(backend.socket_path),))
    await server.wait_for_serial(rf"progress={kill_at}\b", timeout=BOOT_AND_RUN_TIMEOUT_S)
    assert "scat_read=" not in server.serial_text(), "the guest finished before the crash"
    assert server.pid is not None
    caught = await kill_with_requests_in_flight(backend, frontend_pid=server.pid)
    # The new process waits out the dead one's watch on the image, then takes the lock.
    await backend.restart(timeout=90)
    match = await server.wait_for_serial(r"size_before=(\d+)", timeout=BOOT_AND_RUN_TIMEOUT_S)
    assert int(match.group(1)) == size // SECTOR
    ceph.resize_image(name, new_size)
    backend.send_signal(signal.SIGHUP)
    values = await run_to_exit(server, timeout=240)

    log = backend.log_text()
    assert any(caught), f"no request in flight at the kill: {caught}"
    assert backend.starts == 2
    assert "resubmitting" in log, log[-3000:]
    # What the guest wrote, it read back ...
    assert values["a_read"] == values["a_written"]
    expected_scat = b"".join(pattern(f"bmaas-rbd k={k}") for k in range(len(blocks)))
    assert values["scat_read"] == sha256(expected_scat)
    assert values["size_after"] == str(new_size // SECTOR)
    assert values["tail_read"] == values["tail_written"]
    # ... and it is in the cluster: every block where it belongs, nothing else changed.
    data = ceph.read_image(name, 0, new_size)
    assert sha256(data[:big_len]) == values["a_written"]
    wrong = [
        k
        for k, off in enumerate(blocks)
        if data[off * BLOCK : (off + 1) * BLOCK] != pattern(f"bmaas-rbd k={k}")
    ]
    assert not wrong, f"scattered blocks with wrong content: {wrong}"
    tail_off = new_size - tail_blocks * BLOCK
    assert sha256(data[tail_off:]) == values["tail_written"]
    unchanged_outside(data[:size], original, [(0, big_len), *((b * BLOCK, BLOCK) for b in blocks)])
    assert data[size:tail_off] == bytes(tail_off - size)
    assert backend.alive(), log[-2000:]
