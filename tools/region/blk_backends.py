"""vhost-user-blk back-end processes for tests and benchmarks.

``BlkBackend`` spawns one daemon serving one image on a unix socket in a
fresh temp dir, waits until the socket file exists (the front-end's connect
retries past the short bind/listen window), and on ``stop()`` sends SIGTERM,
waits, escalates to SIGKILL, and removes the temp dir.  stdout/stderr go to a
log file whose tail is attached to every error.  Four kinds exist:

* ``offload-blk``: the card's own back-end (``offload.cli:blk_main``), taken
  from the venv's ``bin`` next to the running interpreter, else from PATH;
* ``qsd``: ``qemu-storage-daemon`` with a ``file`` blockdev (``discard=unmap``
  so DISCARD punches holes like the sparse-file engine) and a
  ``vhost-user-blk`` export;
* ``offload-blk-rbd`` and ``qsd-rbd``: the same two serving an RBD image
  (``image`` is then ``POOL/IMAGE`` and ``ceph_conf`` the cluster's config):
  ``offload-blk --rbd``, and qsd's ``rbd`` blockdev (Debian
  ``qemu-block-extra``) with ``cache.direct=on``, which turns librbd's cache
  off as the card's engine does.

A missing binary raises ``BackendStartError``: tests fail, never skip.
``cpu_seconds()`` reads utime+stime from ``/proc/PID/stat``, which covers all
threads of the process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

BackendKind = Literal["offload-blk", "qsd", "offload-blk-rbd", "qsd-rbd"]
BACKEND_KINDS: tuple[BackendKind, ...] = ("offload-blk", "qsd")
RBD_BACKEND_KINDS: tuple[BackendKind, ...] = ("offload-blk-rbd", "qsd-rbd")

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BackendStartError(RuntimeError):
    """The daemon could not be found, exited, or never created its socket."""


def find_offload_blk() -> str:
    venv_bin = Path(sys.executable).parent / "offload-blk"
    if venv_bin.exists():
        return str(venv_bin)
    found = shutil.which("offload-blk")
    if found is None:
        raise BackendStartError("offload-blk not found (pip install -e . provides it)")
    return found


def find_qsd() -> str:
    found = shutil.which("qemu-storage-daemon")
    if found is None:
        raise BackendStartError("qemu-storage-daemon not found (Debian qemu-utils)")
    return found


def qemu_version() -> str:
    out = subprocess.run(
        [find_qsd(), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return out.splitlines()[0].strip() if out else "unknown"


class BlkBackend:
    """One vhost-user-blk daemon for one image file (or RBD image)."""

    def __init__(
        self,
        kind: BackendKind,
        image: str | os.PathLike[str],
        *,
        read_only: bool = False,
        queues: int = 1,
        serial: str = "bmaas-test-disk",
        tmp_root: str | None = None,
        ceph_conf: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.kind: BackendKind = kind
        self.extra_args = list(extra_args)  # appended to offload-blk's command line
        self.image = Path(image)
        self.ceph_conf = ceph_conf
        if kind in RBD_BACKEND_KINDS and ceph_conf is None:
            raise ValueError(f"{kind} needs ceph_conf")
        self.read_only = read_only
        self.queues = queues
        self.serial = serial
        self.dir = Path(tempfile.mkdtemp(prefix=f"bmaas-{kind}-", dir=tmp_root))
        self.socket_path = self.dir / "blk.sock"
        self.log_path = self.dir / "daemon.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.last_log = ""

    # -- command lines ---------------------------------------------------------------------
    def argv(self) -> list[str]:
        if self.kind in ("offload-blk", "offload-blk-rbd"):
            source = (
                ["--rbd", str(self.image), "--ceph-conf", str(self.ceph_conf)]
                if self.kind == "offload-blk-rbd"
                else ["--image", str(self.image)]
            )
            args = [
                find_offload_blk(),
                "--socket",
                str(self.socket_path),
                *source,
                "--queues",
                str(self.queues),
                "--serial",
                self.serial,
            ]
            if self.read_only:
                args.append("--read-only")
            return [*args, *self.extra_args]
        if self.kind in ("qsd", "qsd-rbd"):
            ro = ",read-only=on" if self.read_only else ""
            if self.kind == "qsd-rbd":
                pool, _, name = str(self.image).partition("/")
                blockdev = (
                    f"driver=rbd,node-name=f,pool={pool},image={name},conf={self.ceph_conf},"
                    f"cache.direct=on,discard=unmap{ro}"
                )
            else:
                blockdev = f"driver=file,node-name=f,filename={self.image},discard=unmap{ro}"
            return [
                find_qsd(),
                "--blockdev",
                blockdev,
                "--export",
                "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,"
                f"addr.path={self.socket_path},"
                f"writable={'off' if self.read_only else 'on'},num-queues={self.queues}",
            ]
        raise ValueError(f"unknown back-end kind {self.kind!r}")

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        if self._proc is None:
            raise BackendStartError(f"{self.kind} is not running")
        return self._proc.pid

    def start(self, timeout: float = 15.0) -> BlkBackend:
        argv = self.argv()
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while not self.socket_path.exists():
            code = self._proc.poll()
            if code is not None:
                tail = self.log_tail()
                self.stop()
                raise BackendStartError(f"{self.kind} exited with {code} before listening: {tail}")
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise BackendStartError(f"{self.kind}: no socket after {timeout}s: {tail}")
            time.sleep(0.01)
        return self

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def cpu_seconds(self) -> float:
        """utime+stime of the whole process (all threads) so far."""
        with open(f"/proc/{self.pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2 :].split()
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    def log_tail(self, nbytes: int = 2000) -> str:
        """The end of the daemon's output (kept after ``stop()`` removed the file)."""
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return self.last_log or "<no log>"
        return data[-nbytes:].decode(errors="replace")

    def stop(self, timeout: float = 5.0) -> int | None:
        """Terminate (then kill) the daemon, remove the temp dir; returns the exit code."""
        code: int | None = None
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            code = proc.returncode
            self.last_log = self.log_tail()
        shutil.rmtree(self.dir, ignore_errors=True)
        return code

    def __enter__(self) -> BlkBackend:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
