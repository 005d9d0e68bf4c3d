"""``offload-blk`` processes that a test can start, signal, SIGKILL and restart.

``OffloadBlkProcess`` owns one back-end serving one image (a file, or with
``rbd="POOL/IMAGE"`` and ``ceph_conf`` an RBD image) on one socket path.
Readiness is judged from the socket file itself, never by connecting (a probe
connection would be a front-end session to the server): before each spawn the
path's ``(inode, ctime)`` is recorded, and the back-end is ready once the path
is a socket whose ``(inode, ctime)`` differs, i.e. the new process has bound
its own socket (after a SIGKILL the old socket file stays behind, and
``offload-blk`` replaces it on start).  A process that exits before that fails
the wait with the tail of its log.

Every start appends to one log file (``log_path``, default ``<socket>.log``),
so the log of a test that killed and restarted the back-end tells the whole
story.  ``stop()`` sends SIGTERM, escalates to SIGKILL, and reaps; ``kill()``
is the crash (SIGKILL, reaped, socket file left behind); ``restart()`` spawns
the same command line again.  A missing ``offload-blk`` raises
``OffloadBlkError``: tests fail, never skip.

``kill_with_requests_in_flight`` aims the crash: it freezes the back-end with
SIGSTOP, reads the vhost-user inflight region (whose layout the spec fixes)
through the front-end's fd in ``/proc``, and kills only once some request has
been taken off the ring and not completed; otherwise SIGCONT, a few
milliseconds, and again.  A restart then has something to resubmit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import stat
import struct
from pathlib import Path

from tools.region.blk_backends import BackendStartError, find_offload_blk

__all__ = [
    "OffloadBlkError",
    "OffloadBlkProcess",
    "inflight_heads",
    "inflight_region_path",
    "kill_with_requests_in_flight",
]


class OffloadBlkError(RuntimeError):
    """``offload-blk`` is missing, exited early, or never bound its socket."""


def _socket_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(st.st_mode):
        return None
    return st.st_ino, st.st_ctime_ns


class OffloadBlkProcess:
    """One ``offload-blk --socket SOCKET --image IMAGE|--rbd POOL/IMAGE ...``, restartable."""

    def __init__(
        self,
        *,
        socket_path: Path,
        image: Path | None = None,
        rbd: str | None = None,
        ceph_conf: Path | None = None,
        read_only: bool = False,
        queues: int = 1,
        serial: str | None = None,
        verbose: bool = False,
        log_path: Path | None = None,
    ) -> None:
        if len(os.fsencode(socket_path)) >= 108:
            raise OffloadBlkError(f"socket path too long for AF_UNIX: {socket_path}")
        try:
            binary = find_offload_blk()
        except BackendStartError as exc:
            raise OffloadBlkError(str(exc)) from exc
        self.socket_path = socket_path
        self.image = image
        self.log_path = log_path or socket_path.with_name(socket_path.name + ".log")
        self.argv = [binary, "--socket", str(socket_path)]
        if rbd is not None:
            self.argv += ["--rbd", rbd, "--ceph-conf", str(ceph_conf)]
        else:
            self.argv += ["--image", str(image)]
        self.argv += ["--queues", str(queues)]
        if read_only:
            self.argv.append("--read-only")
        if serial is not None:
            self.argv += ["--serial", serial]
        if verbose:
            self.argv.append("--verbose")
        self._proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise OffloadBlkError("offload-blk is not running")
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def start(self, *, timeout: float = 20.0) -> OffloadBlkProcess:
        """Spawn the back-end and wait until it has bound its own socket."""
        if self.alive():
            raise OffloadBlkError("offload-blk is already running")
        before = _socket_identity(self.socket_path)
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts + 1}: {' '.join(self.argv)}\n".encode())
            log.flush()
            proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
        self._proc = proc
        self.starts += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            now = _socket_identity(self.socket_path)
            if now is not None and now != before:
                return self
            if proc.returncode is not None:
                raise OffloadBlkError(
                    f"offload-blk exited with {proc.returncode} before binding "
                    f"{self.socket_path}: {self.log_text()[-2000:]}"
                )
            if loop.time() > deadline:
                raise OffloadBlkError(
                    f"offload-blk bound no socket at {self.socket_path} after {timeout}s: "
                    f"{self.log_text()[-2000:]}"
                )
            await asyncio.sleep(0.02)

    def send_signal(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            raise OffloadBlkError(
                f"offload-blk is not running (cannot send {sig.name}): {self.log_text()[-2000:]}"
            )
        proc.send_signal(sig)

    async def kill(self) -> int:
        """SIGKILL (a crash: no clean-up, the socket file stays); returns the exit status."""
        proc, self._proc = self._proc, None
        if proc is None:
            raise OffloadBlkError("offload-blk is not running")
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        return await proc.wait()

    async def restart(self, *, timeout: float = 20.0) -> OffloadBlkProcess:
        """Start the same command line again (after ``kill`` or ``stop``)."""
        return await self.start(timeout=timeout)

    async def stop(self, *, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after *timeout*; returns the exit status (None if not running)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                return await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        return await proc.wait()


# --------------------------------------------------------------------------- inflight region
#
# The vhost-user spec fixes the layout of the INFLIGHT_SHMFD region for split rings:
# per queue a block (64-byte aligned) of
#   u64 features | u16 version | u16 desc_num | u16 last_batch_head | u16 used_idx
#   DescStateSplit[desc_num] = u8 inflight | u8 padding[5] | u16 next | u64 counter
# The front-end (QEMU) keeps the region's fd for the life of the VM, so a test can
# read, through /proc/<qemu>/fd, which heads the back-end has taken but not completed.

_INFLIGHT_HEADER = struct.Struct("=QHHHH")
_INFLIGHT_DESC = struct.Struct("=B5xHQ")


def inflight_region_path(frontend_pid: int) -> Path:
    """The front-end's fd of the inflight region (a memfd that parses as one)."""
    fd_dir = Path(f"/proc/{frontend_pid}/fd")
    for entry in sorted(fd_dir.iterdir(), key=lambda p: int(p.name)):
        try:
            target = os.readlink(entry)
            if not target.startswith("/memfd:") or "memory-backend" in target:
                continue
            with entry.open("rb") as f:
                head = f.read(_INFLIGHT_HEADER.size)
        except OSError:
            continue
        if len(head) == _INFLIGHT_HEADER.size:
            _, version, desc_num, _, _ = _INFLIGHT_HEADER.unpack(head)
            if version == 1 and desc_num and not desc_num & (desc_num - 1):
                return entry
    raise OffloadBlkError(f"process {frontend_pid} holds no inflight region")


def inflight_heads(region: Path, *, num_queues: int = 1) -> list[list[int]]:
    """Per queue, the heads marked inflight in the region now."""
    data = region.read_bytes()
    _, _, desc_num, _, _ = _INFLIGHT_HEADER.unpack_from(data)
    block = -(-(_INFLIGHT_HEADER.size + _INFLIGHT_DESC.size * desc_num) // 64) * 64
    heads: list[list[int]] = []
    for q in range(num_queues):
        base = q * block + _INFLIGHT_HEADER.size
        heads.append([h for h in range(desc_num) if data[base + h * _INFLIGHT_DESC.size] & 1])
    return heads


def _task_states(pid: int) -> list[bytes]:
    """The state letter of every thread of *pid* (``T``: stopped)."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            line = (task / "stat").read_bytes()
            end = line.rindex(b")")
            states.append(line[end + 2 : end + 3])
    return states


async def _wait_stopped(pid: int, *, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        states = _task_states(pid)
        if states and all(s in (b"T", b"t") for s in states):
            return
        if loop.time() > deadline:
            raise OffloadBlkError(f"process {pid} did not stop: {states}")
        await asyncio.sleep(0.001)


async def kill_with_requests_in_flight(
    backend: OffloadBlkProcess,
    *,
    frontend_pid: int,
    num_queues: int = 1,
    attempts: int = 1000,
) -> list[list[int]]:
    """SIGKILL *backend* at a moment it holds requests it has not completed.

    Repeatedly freezes the back-end (SIGSTOP), reads the inflight region through
    the front-end's fd, and either kills it (some head is in flight) or lets it
    run a few milliseconds more (SIGCONT).  Returns the heads in flight at the
    kill, per queue; all empty if *attempts* ran out (it is then killed anyway).
    """
    region = inflight_region_path(frontend_pid)
    pid = backend.pid
    rng = random.Random(pid)
    heads: list[list[int]] = [[] for _ in range(num_queues)]
    for _ in range(attempts):
        backend.send_signal(signal.SIGSTOP)
        await _wait_stopped(pid)
        heads = inflight_heads(region, num_queues=num_queues)
        if any(heads):
            break
        backend.send_signal(signal.SIGCONT)
        await asyncio.sleep(rng.uniform(0.0, 0.01))
    await backend.kill()
    return heads
