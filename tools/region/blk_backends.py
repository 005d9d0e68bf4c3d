"""vhost-user-blk back-end processes for tests and benchmarks.

``BlkBackend`` spawns one daemon serving one image on a unix socket in a
fresh temp dir, waits until the socket file exists (the front-end's connect
retries past the short bind/listen window), and on ``stop()`` sends SIGTERM,
waits, escalates to SIGKILL, and removes the temp dir.  stdout/stderr go to a
log file whose tail is attached to every error.  Two kinds exist:

* ``offload-blk``: the card's own back-end (``offload.cli:blk_main``), taken
  from the venv's ``bin`` next to the running interpreter, else from PATH;
* ``qsd``: ``qemu-storage-daemon`` with a ``file`` blockdev (``discard=unmap``
  so DISCARD punches holes like the sparse-file engine) and a
  ``vhost-user-blk`` export.

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
from pathlib import Path
from types import TracebackType
from typing import Literal

BackendKind = Literal["offload-blk", "qsd"]
BACKEND_KINDS: tuple[BackendKind, ...] = ("offload-blk", "qsd")

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
    """One vhost-user-blk daemon for one image file."""

    def __init__(
        self,
        kind: BackendKind,
        image: str | os.PathLike[str],
        *,
        read_only: bool = False,
        queues: int = 1,
        serial: str = "bmaas-test-disk",
        tmp_root: str | None = None,
    ) -> None:
        self.kind: BackendKind = kind
        self.image = Path(image)
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
        if self.kind == "offload-blk":
            args = [
                find_offload_blk(),
                "--socket",
                str(self.socket_path),
                "--image",
                str(self.image),
                "--queues",
                str(self.queues),
                "--serial",
                self.serial,
            ]
            if self.read_only:
                args.append("--read-only")
            return args
        if self.kind == "qsd":
            ro = ",read-only=on" if self.read_only else ""
            return [
                find_qsd(),
                "--blockdev",
                f"driver=file,node-name=f,filename={self.image},discard=unmap{ro}",
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
