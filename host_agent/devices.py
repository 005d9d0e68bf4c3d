"""The card's device back-ends, as supervised processes.

Each volume is served by its own ``offload-blk`` process (one vhost-user-blk
socket each), each NIC by its own ``offload-net`` (started inside the host's
network namespace, where its TAP and the VPC fabric live).  They are
processes, not threads of the agent, for one reason above all: the data
path must outlive the management plane.  A crashed or upgraded agent leaves
every back-end serving its guest; the new agent finds them again from their
pid files (checking that the pid still runs a back-end on the same socket)
and supervises them from there.  When a back-end dies the agent starts a
new one on the same socket; QEMU reconnects, and a disk's inflight region
lets it resubmit what was in flight, so the guest sees a pause, not an
error.  Processes also give each device its own GIL and its own crash
domain.

Back-ends run in their own session (``start_new_session``), so signals to
the agent's process group never reach them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host_agent import metrics


class DeviceError(Exception):
    """A back-end could not be started (the message names the volume)."""


def _program(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise DeviceError(f"{name} not found next to the agent's Python or on PATH")
    return found


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def pid_alive(pid: int, *, must_contain: str) -> bool:
    """*pid* runs and its command line contains *must_contain* (not a reused pid)."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # our child: reap it
        return False
    return any(must_contain in arg for arg in _cmdline(pid))


@dataclass(frozen=True, slots=True, kw_only=True)
class RbdDisk:
    """A disk that is an RBD image: ``offload-blk --rbd POOL/IMAGE``."""

    pool: str
    image: str
    conf: Path
    client_id: str = "admin"

    def args(self) -> list[str]:
        return [
            "--rbd",
            f"{self.pool}/{self.image}",
            "--ceph-conf",
            str(self.conf),
            "--ceph-id",
            self.client_id,
        ]


#: what a volume source hands provisioning: a file on the host or an RBD image
DiskSource = Path | RbdDisk


@dataclass(frozen=True, slots=True, kw_only=True)
class BlkSpec:
    id: str
    image: DiskSource
    socket: Path
    queues: int = 1
    read_only: bool = False
    serial: str = ""
    #: QoS (0: unlimited); a running back-end follows changes via ``Backend.apply_limits``
    max_iops: int = 0
    max_mbps: int = 0

    program = "offload-blk"

    @property
    def limits_file(self) -> Path:
        return self.socket.with_suffix(".limits")

    def args(self, stats: Path) -> list[str]:
        argv = ["--socket", str(self.socket)]
        if isinstance(self.image, RbdDisk):
            argv += self.image.args()
        else:
            argv += ["--image", str(self.image)]
        argv += ["--queues", str(self.queues), "--stats", str(stats)]
        argv += ["--max-iops", str(self.max_iops), "--max-mbps", str(self.max_mbps)]
        argv += ["--limits", str(self.limits_file)]
        if self.read_only:
            argv.append("--read-only")
        if self.serial:
            argv += ["--serial", self.serial[:20]]
        return argv


@dataclass(frozen=True, slots=True, kw_only=True)
class NetSpec:
    """A NIC: ``offload-net`` between the server's virtio-net and a TAP
    (in the host's network namespace, *netns*, when one is set)."""

    id: str
    socket: Path
    tap: str
    mac: str
    ip: str = ""  # ADDR/PREFIX: the card answers DHCP, ARP and metadata for it
    gateway: str = ""
    metadata: Path | None = None
    #: IMDSv2 policy of the NIC's metadata service: "required" (the default,
    #: see docs/agent.md) or "optional"
    metadata_tokens: str = "required"
    #: the VPC directory the card routes with (rewritten by the agent, then SIGHUP)
    vpc_directory: Path | None = None
    mtu: int = 1500
    netns: str = ""
    serial: str = ""

    program = "offload-net"

    def args(self, stats: Path) -> list[str]:
        argv = ["--socket", str(self.socket), "--tap", self.tap, "--mac", self.mac]
        if self.ip:
            argv += ["--ip", self.ip]
            if self.gateway:
                argv += ["--gateway", self.gateway]
            if self.metadata is not None:
                argv += ["--metadata", str(self.metadata)]
            argv += ["--metadata-tokens", self.metadata_tokens]
            if self.vpc_directory is not None:
                argv += ["--vpc-directory", str(self.vpc_directory)]
        if self.netns:
            argv += ["--netns", self.netns]
        return [*argv, "--mtu", str(self.mtu), "--stats", str(stats)]


class Backend:
    """One supervised back-end process; its pid file sits beside its socket."""

    def __init__(self, spec: BlkSpec | NetSpec) -> None:
        self.spec = spec
        self.pidfile = spec.socket.with_suffix(".pid")
        self.logfile = spec.socket.with_suffix(".log")
        self.statsfile = spec.socket.with_suffix(".stats")
        self._child: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def pid(self) -> int:
        try:
            return int(self.pidfile.read_text())
        except (OSError, ValueError):
            return 0

    def alive(self) -> bool:
        if self._child is not None and self._child.poll() is not None:
            self._child = None
            return False
        return pid_alive(self.pid(), must_contain=str(self.spec.socket))

    def ensure(self, *, timeout: float = 10.0) -> bool:
        """Start the back-end unless it is running; True if it was (re)started."""
        if self.alive():
            return False
        if self.pid():  # it ran before and died: a restart
            self.restarts += 1
            metrics.BACKEND_RESTARTS.inc()
        self.spec.socket.parent.mkdir(parents=True, exist_ok=True)
        argv = [_program(self.spec.program), *self.spec.args(self.statsfile)]
        with self.logfile.open("ab") as log:
            self._child = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        self.pidfile.write_text(str(self._child.pid))
        deadline = time.monotonic() + timeout
        while not self.spec.socket.exists():
            if self._child.poll() is not None:
                raise DeviceError(
                    f"{self.spec.program} for {self.spec.id} exited "
                    f"({self._child.returncode}): {self._log_tail()}"
                )
            if time.monotonic() > deadline:
                raise DeviceError(
                    f"{self.spec.program} for {self.spec.id}: no socket after {timeout}s"
                )
            time.sleep(0.02)
        return True

    def _log_tail(self) -> str:
        try:
            return self.logfile.read_text(errors="replace").strip().splitlines()[-1][-300:]
        except (OSError, IndexError):
            return "no output"

    def stats(self) -> dict[str, Any]:
        """The back-end's last counters (``offload-blk --stats``), or {} if none yet."""
        try:
            data = json.loads(self.statsfile.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def cpu_seconds(self) -> float:
        """User + system CPU time of the back-end process so far."""
        try:
            fields = Path(f"/proc/{self.pid()}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def resize(self) -> None:
        """Tell the back-end its image grew (it re-reads the size, the guest is told)."""
        pid = self.pid()
        if self.alive():
            os.kill(pid, signal.SIGHUP)

    def apply_limits(self, max_iops: int, max_mbps: int) -> bool:
        """A volume's QoS limits: rewrite the back-end's limits file (whole, then
        renamed) and, if they changed, SIGHUP it so it re-reads them; True if so.

        The file also outlives the process: a restarted back-end reads the
        latest limits from it rather than its first command line's.
        """
        if not isinstance(self.spec, BlkSpec):
            return False
        path = self.spec.limits_file
        text = json.dumps({"max_iops": max_iops, "max_mbps": max_mbps})
        try:
            old = path.read_text()
        except OSError:
            old = None
        if old == text:
            return False
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        if old is None and (self.spec.max_iops, self.spec.max_mbps) == (max_iops, max_mbps):
            return False  # first write: the back-end started with these limits
        if self.alive():
            os.kill(self.pid(), signal.SIGHUP)
        return True

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop the back-end and remove its socket, pid and log files."""
        if self._child is not None:
            self._child.poll()  # reap it if it exited, so it is not taken for alive
        _terminate(self.pid(), str(self.spec.socket), timeout)
        if self._child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._child.wait(timeout)
            self._child = None
        files = [self.spec.socket, self.pidfile, self.logfile, self.statsfile]
        if isinstance(self.spec, BlkSpec):
            files.append(self.spec.limits_file)
        for path in files:
            path.unlink(missing_ok=True)


def _terminate(pid: int, socket: str, timeout: float) -> None:
    """SIGTERM the back-end *pid* (if it still serves *socket*), SIGKILL after *timeout*."""
    if not pid_alive(pid, must_contain=socket):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid, must_contain=socket) and time.monotonic() < deadline:
        time.sleep(0.02)
    if pid_alive(pid, must_contain=socket):
        os.kill(pid, signal.SIGKILL)


def stop_leftovers(run_dir: Path, prefix: str, *, timeout: float = 5.0) -> None:
    """Stop the back-ends whose files in *run_dir* start with *prefix* (left by
    a previous agent process and never adopted), then remove those files."""
    if not run_dir.exists():
        return
    for pidfile in run_dir.glob(prefix + "*.pid"):
        try:
            pid = int(pidfile.read_text())
        except (OSError, ValueError):
            continue
        _terminate(pid, str(pidfile.with_suffix(".sock")), timeout)
    for path in run_dir.glob(prefix + "*"):
        path.unlink(missing_ok=True)
