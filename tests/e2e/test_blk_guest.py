"""A real Linux guest drives ``offload-blk`` through QEMU's vhost-user-blk.

How the tests work: each test starts one or more ``offload-blk`` processes
(``tests.harness.offload_blk``) on images the test filled with seeded random
bytes, boots the guest image under QEMU (``qemu_server``) with those sockets
as ``vhost-user-blk-pci`` disks, and hands the guest a busybox ``sh`` script.
The script does its I/O with ``dd`` (``oflag=direct``/``iflag=direct``, or
through the page cache followed by ``echo 3 > /proc/sys/vm/drop_caches`` so
that reads really reach the back-end) and prints ``key=value`` lines
(checksums, sysfs values) that ``GuestValues`` collects from the serial
console.  The host side then checks the same bytes in the image file: a
checksum the guest computed over what it wrote must match the checksum of the
image at the same offset, pre-existing data the guest read must match the
host's copy, and every byte outside the written ranges must be unchanged.

Some tests act on the back-end while the guest runs: the guest prints a marker,
the test waits for it on the serial console and then grows the image and sends
SIGHUP (online resize), or SIGKILLs ``offload-blk`` and restarts it on the same
socket (QEMU reconnects with ``reconnect=1`` and hands the new process the
inflight region).  The kill is aimed: the back-end is frozen with SIGSTOP until
the inflight region (read through QEMU's fd, in the layout the vhost-user spec
fixes) shows a request it took and did not complete, so every restart has to
resubmit something.  Sockets live in a short directory under /tmp (AF_UNIX paths
must fit 108 bytes); images, serial logs and back-end logs live in
``tmp_path``.  Every process a test starts is killed on teardown.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from host_agent.power.qemu import BlkDisk, QemuServer
from tests.conftest import QemuFactory
from tests.harness.offload_blk import OffloadBlkProcess, kill_with_requests_in_flight
from tools.region.guest import EXIT_RE, command_output

pytestmark = pytest.mark.e2e

MIB = 1 << 20
BLOCK = 4096
SECTOR = 512
BOOT_AND_RUN_TIMEOUT_S = 150.0

# Shell helpers every guest script starts with.  ``q`` runs a command quietly
# but shows its stderr if it fails (``set -e`` then ends the script); a
# background job sets its own ``QERR`` file.
PRELUDE = r"""
q() { "$@" 2>"${QERR:-/tmp/q.err}" || { rc=$?; cat "${QERR:-/tmp/q.err}"; return $rc; }; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
"""

BackendFactory = Callable[..., Awaitable[OffloadBlkProcess]]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for unix sockets (``tmp_path`` may be too long for AF_UNIX)."""
    path = Path(tempfile.mkdtemp(prefix="bb", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def offload_blk(sock_dir: Path, tmp_path: Path) -> AsyncIterator[BackendFactory]:
    """Start back-ends: ``await offload_blk(image, name="vol0", queues=2, ...)``."""
    started: list[OffloadBlkProcess] = []

    async def start(
        image: Path,
        *,
        name: str = "vol0",
        read_only: bool = False,
        queues: int = 1,
        serial: str | None = None,
    ) -> OffloadBlkProcess:
        backend = OffloadBlkProcess(
            socket_path=sock_dir / f"{name}.sock",
            image=image,
            log_path=tmp_path / f"{name}-offload-blk.log",
            read_only=read_only,
            queues=queues,
            serial=serial,
        )
        started.append(backend)
        return await backend.start()

    yield start
    for backend in started:
        await backend.stop()


# --------------------------------------------------------------------------- helpers


def make_image(path: Path, size: int, *, seed: int) -> bytes:
    """Fill *path* with *size* seeded random bytes; returns them."""
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class GuestValues(dict[str, str]):
    """The ``key=value`` lines the guest script printed (last one wins).

    A key the guest did not print fails the test with the whole output.
    """

    def __init__(self, output: str) -> None:
        lines = re.finditer(r"^([A-Za-z_]\w*)=(.*)$", output, re.M)
        super().__init__((m[1], m[2].strip()) for m in lines)
        self.output = output

    def __missing__(self, key: str) -> str:
        raise AssertionError(f"the guest printed no {key}=...; its output:\n{self.output}")


async def run_to_exit(
    server: QemuServer, *, timeout: float = BOOT_AND_RUN_TIMEOUT_S
) -> GuestValues:
    """Wait for the guest's command to finish (it must exit 0); what it printed."""
    match = await server.wait_for_serial(EXIT_RE.pattern, timeout=timeout)
    output = command_output(server.serial_text())
    assert match.group(1) == "0", f"guest script failed ({match.group(1)}):\n{output}"
    return GuestValues(output)


def unchanged_outside(image: bytes, original: bytes, written: list[tuple[int, int]]) -> None:
    """Assert every byte outside the ``(offset, length)`` ranges kept its original value."""
    assert len(image) >= len(original)
    pos = 0
    for offset, length in [*sorted(written), (len(original), 0)]:
        if image[pos:offset] != original[pos:offset]:
            bad = next(i for i in range(pos, offset) if image[i] != original[i])
            raise AssertionError(f"image changed at byte {bad}, outside every guest write")
        pos = max(pos, offset + length)


def pattern(text: str, length: int = BLOCK) -> bytes:
    """What the guest's ``yes "TEXT" | head -c LENGTH`` produces."""
    line = f"{text}\n".encode()
    return (line * (length // len(line) + 1))[:length]


# --------------------------------------------------------------------------- 1. data path


async def test_guest_writes_and_reads_back_through_the_backend(
    qemu_server: QemuFactory, offload_blk: BackendFactory, tmp_path: Path
) -> None:
    size = 8 * MIB
    image = tmp_path / "data.img"
    original = make_image(image, size, seed=1)
    backend = await offload_blk(image)

    # A: 1 MiB O_DIRECT in 64 KiB requests at 1 MiB, read back O_DIRECT in 4 KiB requests.
    # B: 100000 bytes through the page cache at an unaligned byte offset (the kernel
    #    reads the partial pages first), fsync, drop caches, read back.
    # C: 1 MiB the host wrote before boot, read O_DIRECT; D: 256 KiB of host data read
    #    through the page cache right after drop_caches.
    a_off, a_len = 1 * MIB, 1 * MIB
    b_off, b_len = 3 * MIB + 1000, 100_000
    c_off, c_len = 5 * MIB, 1 * MIB
    d_off, d_len = 6 * MIB + 4096, 256 * 1024
    script = PRELUDE + (
        f"q dd if=/dev/urandom of=/tmp/a bs=65536 count={a_len // 65536}\n"
        f"q dd if=/tmp/a of=/dev/vda bs=65536 seek={a_off // 65536} oflag=direct conv=notrunc\n"
        f"q dd if=/dev/vda of=/tmp/a.back bs=4096 skip={a_off // 4096} count={a_len // 4096}"
        " iflag=direct\n"
        "echo a_written=$(sha /tmp/a)\n"
        "echo a_read=$(sha /tmp/a.back)\n"
        f"q dd if=/dev/urandom of=/tmp/b bs={b_len} count=1 iflag=fullblock\n"
        f"q dd if=/tmp/b of=/dev/vda bs=4096 seek={b_off} oflag=seek_bytes conv=notrunc,fsync\n"
        "echo 3 > /proc/sys/vm/drop_caches\n"
        f"q dd if=/dev/vda of=/tmp/b.back bs=4096 skip={b_off} count={b_len}"
        " iflag=skip_bytes,count_bytes\n"
        "echo b_written=$(sha /tmp/b)\n"
        "echo b_read=$(sha /tmp/b.back)\n"
        f"q dd if=/dev/vda of=/tmp/c bs=65536 skip={c_off // 65536} count={c_len // 65536}"
        " iflag=direct\n"
        "echo c_read=$(sha /tmp/c)\n"
        "echo 3 > /proc/sys/vm/drop_caches\n"
        f"q dd if=/dev/vda of=/tmp/d bs=4096 skip={d_off // 4096} count={d_len // 4096}\n"
        "echo d_read=$(sha /tmp/d)\n"
        "echo size=$(cat /sys/block/vda/size)\n"
    )
    server = await qemu_server(script=script, name="data", disks=(BlkDisk(backend.socket_path),))
    values = await run_to_exit(server)

    assert values["size"] == str(size // SECTOR)
    # the guest read back what it wrote ...
    assert values["a_read"] == values["a_written"]
    assert values["b_read"] == values["b_written"]
    # ... the image holds it at the same offsets ...
    data = image.read_bytes()
    assert len(data) == size
    assert sha256(data[a_off : a_off + a_len]) == values["a_written"]
    assert sha256(data[b_off : b_off + b_len]) == values["b_written"]
    # ... the guest saw what the host had written ...
    assert values["c_read"] == sha256(original[c_off : c_off + c_len])
    assert values["d_read"] == sha256(original[d_off : d_off + d_len])
    # ... and nothing else changed (the read-modify-write of B's edge pages included).
    unchanged_outside(data, original, [(a_off, a_len), (b_off, b_len)])
    assert backend.alive(), backend.log_text()[-2000:]


# --------------------------------------------------------------------------- 2. multi-queue


async def test_two_queues_serve_parallel_writers(
    qemu_server: QemuFactory, offload_blk: BackendFactory, tmp_path: Path
) -> None:
    size = 8 * MIB
    image = tmp_path / "mq.img"
    original = make_image(image, size, seed=2)
    backend = await offload_blk(image, queues=2)
    region = 2 * MIB

    # Writer q runs pinned to the CPU that blk-mq maps to hardware queue q, so
    # each queue carries one writer; interrupts per vq show both queues completed I/O.
    script = PRELUDE + (
        "echo mq_count=$(ls /sys/block/vda/mq | wc -l)\n"
        'irqs() { awk -v q="req.$1" \'$NF ~ ("-" q "$") '
        "{ s = 0; for (i = 2; i <= NF - 3; i++) s += $i; print s }' /proc/interrupts; }\n"
        "for q in 0 1; do\n"
        "  echo cpus_$q=$(cat /sys/block/vda/mq/$q/cpu_list)\n"
        f"  q dd if=/dev/urandom of=/tmp/d$q bs=65536 count={region // 65536}\n"
        "  echo written_$q=$(sha /tmp/d$q)\n"
        "  echo irq_before_$q=$(irqs $q)\n"
        "done\n"
        "writer() {\n"
        "  cpu=$(cat /sys/block/vda/mq/$1/cpu_list)\n"
        f"  seek=$(( (1 + $1 * 2) * {MIB // 16384} ))\n"
        "  taskset -c $cpu dd if=/tmp/d$1 of=/dev/vda bs=16384 seek=$seek"
        " oflag=direct conv=notrunc 2>/tmp/w$1.err\n"
        f"  taskset -c $cpu dd if=/dev/vda of=/tmp/r$1 bs=16384 skip=$seek"
        f" count={region // 16384} iflag=direct 2>>/tmp/w$1.err\n"
        "}\n"
        "writer 0 & p0=$!\n"
        "writer 1 & p1=$!\n"
        "rc0=0; wait $p0 || rc0=$?\n"
        "rc1=0; wait $p1 || rc1=$?\n"
        "echo rc_0=$rc0 rc_1=$rc1\n"
        "cat /tmp/w0.err /tmp/w1.err | grep -v records || true\n"
        "for q in 0 1; do\n"
        "  echo read_$q=$(sha /tmp/r$q)\n"
        "  echo irq_after_$q=$(irqs $q)\n"
        "done\n"
    )
    server = await qemu_server(
        script=script,
        name="mq",
        cpus=2,
        disks=(BlkDisk(backend.socket_path, num_queues=2),),
    )
    values = await run_to_exit(server)
    output = values.output
    rcs = dict(re.findall(r"rc_(\d)=(\d+)", output))

    assert values["mq_count"] == "2"
    assert {values["cpus_0"], values["cpus_1"]} == {"0", "1"}, output
    assert rcs == {"0": "0", "1": "0"}, output
    data = image.read_bytes()
    for q in (0, 1):
        offset = (1 + 2 * q) * MIB
        assert values[f"read_{q}"] == values[f"written_{q}"], f"queue {q} read back other data"
        assert sha256(data[offset : offset + region]) == values[f"written_{q}"]
        irqs = int(values[f"irq_after_{q}"]) - int(values[f"irq_before_{q}"])
        assert irqs > 0, f"no completion interrupt on queue {q}:\n{output}"
    unchanged_outside(data, original, [(1 * MIB, region), (3 * MIB, region)])
    assert backend.alive(), backend.log_text()[-2000:]


# --------------------------------------------------------------------------- 3. online resize


async def test_online_resize_reaches_the_running_guest(
    qemu_server: QemuFactory, offload_blk: BackendFactory, tmp_path: Path
) -> None:
    old_size, new_size = 4 * MIB, 12 * MIB
    image = tmp_path / "grow.img"
    original = make_image(image, old_size, seed=3)
    backend = await offload_blk(image)
    tail_blocks = 64  # the last 256 KiB, all of it past the old end

    script = PRELUDE + (
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
        "echo polls=$i\n"
        "echo bytes_after=$(blockdev --getsize64 /dev/vda)\n"
        f"q dd if=/dev/urandom of=/tmp/t bs=4096 count={tail_blocks}\n"
        f"seek=$(( new / 8 - {tail_blocks} ))\n"
        "q dd if=/tmp/t of=/dev/vda bs=4096 seek=$seek oflag=direct conv=notrunc,fsync\n"
        f"q dd if=/dev/vda of=/tmp/t.back bs=4096 skip=$seek count={tail_blocks} iflag=direct\n"
        "echo tail_written=$(sha /tmp/t)\n"
        "echo tail_read=$(sha /tmp/t.back)\n"
    )
    server = await qemu_server(script=script, name="grow", disks=(BlkDisk(backend.socket_path),))
    match = await server.wait_for_serial(r"size_before=(\d+)", timeout=BOOT_AND_RUN_TIMEOUT_S)
    assert int(match.group(1)) == old_size // SECTOR

    # QEMU is connected by now (the guest has probed the disk through it), so the
    # back-end's CONFIG_CHANGE_MSG reaches it and it interrupts the guest.
    os.truncate(image, new_size)
    backend.send_signal(signal.SIGHUP)
    values = await run_to_exit(server)

    assert values["size_after"] == str(new_size // SECTOR)
    assert values["bytes_after"] == str(new_size)
    assert values["tail_read"] == values["tail_written"]
    data = image.read_bytes()
    assert len(data) == new_size
    tail_off = new_size - tail_blocks * BLOCK
    assert sha256(data[tail_off:]) == values["tail_written"]
    assert data[:old_size] == original  # the grown range is written; the rest kept
    assert data[old_size:tail_off] == bytes(tail_off - old_size)
    assert backend.alive(), backend.log_text()[-2000:]


async def test_growth_while_the_backend_is_down_reaches_the_guest_after_restart(
    qemu_server: QemuFactory, offload_blk: BackendFactory, tmp_path: Path
) -> None:
    """QEMU 7.2 does not re-read the config on reconnect: the new back-end announces it."""
    old_size, new_size = 4 * MIB, 8 * MIB
    image = tmp_path / "down.img"
    make_image(image, old_size, seed=5)
    backend = await offload_blk(image)
    script = PRELUDE + (
        "old=$(cat /sys/block/vda/size)\n"
        "echo size_before=$old\n"
        "i=0\n"
        'while [ "$(cat /sys/block/vda/size)" = "$old" ]; do\n'
        "  i=$((i + 1))\n"
        "  if [ $i -gt 300 ]; then echo resize=timeout; exit 1; fi\n"
        "  q dd if=/dev/vda of=/dev/null bs=4096 count=1 iflag=direct\n"
        "  sleep 0.2\n"
        "done\n"
        "echo size_after=$(cat /sys/block/vda/size)\n"
    )
    server = await qemu_server(script=script, name="down", disks=(BlkDisk(backend.socket_path),))
    match = await server.wait_for_serial(r"size_before=(\d+)", timeout=BOOT_AND_RUN_TIMEOUT_S)
    assert int(match.group(1)) == old_size // SECTOR
    await backend.kill()
    os.truncate(image, new_size)  # no SIGHUP: nobody is there to receive it
    await backend.restart()
    values = await run_to_exit(server)
    assert values["size_after"] == str(new_size // SECTOR)
    assert backend.alive(), backend.log_text()[-2000:]


# --------------------------------------------------------------------------- 4. crash + restart


async def test_backend_killed_and_restarted_loses_and_doubles_no_write(
    qemu_server: QemuFactory, offload_blk: BackendFactory, tmp_path: Path
) -> None:
    size = 8 * MIB
    image = tmp_path / "crash.img"
    original = make_image(image, size, seed=4)
    backend = await offload_blk(image)
    iterations, seq_base, rot_base, rot = 150, 64, 16, 8  # in 4 KiB blocks
    bg_off, bg_len = 2 * MIB, 1 * MIB  # the background writer's region
    rd_off, rd_len = 4 * MIB, 4 * MIB  # the background reader's region (host data)
    kills_at = (40, 100)  # SIGKILL once the guest reported this many iterations

    # The main loop's iteration k writes pattern(k) to block seq_base + k (each
    # block written once: a lost write shows) and to block rot_base + k % rot
    # (overwritten every `rot` iterations: an old request replayed late leaves an
    # older pattern behind); each write is O_DIRECT + fsync, done before dd returns.
    # Meanwhile a background writer rewrites its 1 MiB region with pattern(pass)
    # (O_DIRECT) and a background reader re-reads 4 MiB of host data.  The test
    # kills the back-end only while it holds requests it took and did not complete
    # (``kill_with_requests_in_flight``), so the new process must resubmit them.
    script = PRELUDE + (
        "(\n"
        "  QERR=/tmp/bg.err; n=0\n"
        "  while [ ! -e /tmp/stop ]; do\n"
        "    n=$((n + 1))\n"
        f'    yes "bmaas-bg pass=$n" | head -c {bg_len} > /tmp/bg\n'
        f"    q dd if=/tmp/bg of=/dev/vda bs={bg_len} seek={bg_off // bg_len}"
        " oflag=direct conv=notrunc\n"
        "  done\n"
        "  echo bg_passes=$n\n"
        ") & bg=$!\n"
        "(\n"
        "  QERR=/tmp/rd.err; n=0; bad=0\n"
        "  while [ ! -e /tmp/stop ]; do\n"
        f"    q dd if=/dev/vda of=/tmp/rd bs=1048576 skip={rd_off // MIB} count={rd_len // MIB}"
        " iflag=direct\n"
        f'    [ "$(sha /tmp/rd)" = "{sha256(original[rd_off : rd_off + rd_len])}" ]'
        " || bad=$((bad + 1))\n"
        "    n=$((n + 1))\n"
        "  done\n"
        "  echo rd_passes=$n\n"
        "  echo rd_bad=$bad\n"
        ") & rd=$!\n"
        "k=0\n"
        ": > /tmp/expected_seq\n"
        f"while [ $k -lt {iterations} ]; do\n"
        '  yes "bmaas-blk k=$k" | head -c 4096 > /tmp/blk\n'
        f"  q dd if=/tmp/blk of=/dev/vda bs=4096 seek=$(({seq_base} + k))"
        " oflag=direct conv=notrunc,fsync\n"
        f"  q dd if=/tmp/blk of=/dev/vda bs=4096 seek=$(({rot_base} + k % {rot}))"
        " oflag=direct conv=notrunc,fsync\n"
        "  cat /tmp/blk >> /tmp/expected_seq\n"
        f"  cp /tmp/blk /tmp/rot$((k % {rot}))\n"
        "  k=$((k + 1))\n"
        "  if [ $((k % 10)) -eq 0 ]; then echo progress=$k; fi\n"
        "done\n"
        "touch /tmp/stop\n"
        "wait $bg\n"
        "wait $rd\n"
        f"cat $(i=0; while [ $i -lt {rot} ]; do echo /tmp/rot$i; i=$((i + 1)); done)"
        " > /tmp/expected_rot\n"
        f"q dd if=/dev/vda of=/tmp/seq bs=4096 skip={seq_base} count={iterations} iflag=direct\n"
        f"q dd if=/dev/vda of=/tmp/rot bs=4096 skip={rot_base} count={rot} iflag=direct\n"
        f"q dd if=/dev/vda of=/tmp/bg.back bs={bg_len} skip={bg_off // bg_len} count=1"
        " iflag=direct\n"
        "echo seq_expected=$(sha /tmp/expected_seq)\n"
        "echo seq_read=$(sha /tmp/seq)\n"
        "echo rot_expected=$(sha /tmp/expected_rot)\n"
        "echo rot_read=$(sha /tmp/rot)\n"
        "echo bg_expected=$(sha /tmp/bg)\n"
        "echo bg_read=$(sha /tmp/bg.back)\n"
    )
    server = await qemu_server(script=script, name="crash", disks=(BlkDisk(backend.socket_path),))
    caught: list[list[list[int]]] = []
    for at in kills_at:
        await server.wait_for_serial(rf"progress={at}\b", timeout=BOOT_AND_RUN_TIMEOUT_S)
        assert "seq_read=" not in server.serial_text(), "the guest finished before the crash"
        assert server.pid is not None
        caught.append(await kill_with_requests_in_flight(backend, frontend_pid=server.pid))
        await backend.restart()
    values = await run_to_exit(server, timeout=240)

    log = backend.log_text()
    # every kill hit the back-end holding requests it had taken but not completed
    assert all(any(queues) for queues in caught), f"heads in flight at the kills: {caught}"
    assert backend.starts == 1 + len(kills_at)
    assert log.count("front-end connected") >= backend.starts, log[-3000:]
    # the guest saw every write land exactly as issued and read host data intact ...
    assert values["seq_read"] == values["seq_expected"]
    assert values["rot_read"] == values["rot_expected"]
    assert values["bg_read"] == values["bg_expected"]
    assert int(values["rd_passes"]) > 0
    assert values["rd_bad"] == "0"
    # ... and so does the host, block by block.
    data = image.read_bytes()
    assert len(data) == size
    wrong = [
        k
        for k in range(iterations)
        if data[(seq_base + k) * BLOCK : (seq_base + k + 1) * BLOCK] != pattern(f"bmaas-blk k={k}")
    ]
    assert not wrong, f"sequential blocks with wrong content: {wrong}"
    for j in range(rot):
        last = max(k for k in range(iterations) if k % rot == j)
        got = data[(rot_base + j) * BLOCK : (rot_base + j + 1) * BLOCK]
        assert got == pattern(f"bmaas-blk k={last}"), f"block {rot_base + j}: {got[:32]!r}"
    passes = int(values["bg_passes"])
    assert data[bg_off : bg_off + bg_len] == pattern(f"bmaas-bg pass={passes}", bg_len)
    unchanged_outside(
        data,
        original,
        [(seq_base * BLOCK, iterations * BLOCK), (rot_base * BLOCK, rot * BLOCK), (bg_off, bg_len)],
    )
    assert backend.alive(), log[-2000:]


# --------------------------------------------------------------------------- 5. read-only


async def test_read_only_disk_refuses_writes(
    qemu_server: QemuFactory, offload_blk: BackendFactory, tmp_path: Path
) -> None:
    size = 4 * MIB
    image = tmp_path / "ro.img"
    original = make_image(image, size, seed=5)
    backend = await offload_blk(image, read_only=True)
    read_off, read_len = 1 * MIB, 512 * 1024

    # The back-end offers VIRTIO_BLK_F_RO, so the guest kernel marks the disk
    # read-only and refuses writes itself (EPERM); that the back-end also fails a
    # write that reaches it is the integration tests' business.  Reads still work.
    script = PRELUDE + (
        "echo ro=$(cat /sys/block/vda/ro)\n"
        "echo getro=$(blockdev --getro /dev/vda)\n"
        "q dd if=/dev/urandom of=/tmp/x bs=4096 count=16\n"
        "if dd if=/tmp/x of=/dev/vda bs=4096 seek=256 oflag=direct conv=notrunc 2>/tmp/e1;"
        " then echo direct_write=ok; else echo direct_write=failed; fi\n"
        "if dd if=/tmp/x of=/dev/vda bs=4096 conv=notrunc,fsync 2>/tmp/e2;"
        " then echo cached_write=ok; else echo cached_write=failed; fi\n"
        "echo 3 > /proc/sys/vm/drop_caches\n"
        f"q dd if=/dev/vda of=/tmp/r bs=4096 skip={read_off // 4096} count={read_len // 4096}"
        " iflag=direct\n"
        "echo read=$(sha /tmp/r)\n"
        "q dd if=/dev/vda of=/tmp/head bs=4096 count=16\n"
        "echo head=$(sha /tmp/head)\n"
    )
    server = await qemu_server(script=script, name="ro", disks=(BlkDisk(backend.socket_path),))
    values = await run_to_exit(server)

    assert values["ro"] == "1"
    assert values["getro"] == "1"
    assert values["direct_write"] == "failed"
    assert values["cached_write"] == "failed"
    assert values["read"] == sha256(original[read_off : read_off + read_len])
    assert values["head"] == sha256(original[: 16 * BLOCK])
    assert image.read_bytes() == original
    assert backend.alive(), backend.log_text()[-2000:]


# --------------------------------------------------------------------------- 6. GET_ID


async def test_guest_reads_the_serial_of_each_disk(
    qemu_server: QemuFactory, offload_blk: BackendFactory, tmp_path: Path
) -> None:
    # Two disks told apart by size; the second serial fills all 20 bytes of
    # the virtio-blk ID (no NUL terminator on the wire).
    serials = {4 * MIB: "bmaas-vol-0001", 6 * MIB: "ABCDEFGHIJ0123456789"}
    disks = []
    for i, (size, serial) in enumerate(serials.items()):
        image = tmp_path / f"id{i}.img"
        make_image(image, size, seed=60 + i)
        backend = await offload_blk(image, name=f"id{i}", serial=serial)
        disks.append(BlkDisk(backend.socket_path))

    script = PRELUDE + (
        "for d in vda vdb; do\n"
        '  echo "serial_$(cat /sys/block/$d/size)=[$(cat /sys/block/$d/serial)]"\n'
        "done\n"
    )
    server = await qemu_server(script=script, name="ids", disks=tuple(disks))
    values = await run_to_exit(server)

    for size, serial in serials.items():
        assert values.get(f"serial_{size // SECTOR}") == f"[{serial}]", values
