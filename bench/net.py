"""Network benchmark: offload-net vs DPDK's vhost back-end, driven by DPDK testpmd.

Run ``python -m bench.net`` (as root: it creates a network namespace).  The
guest is ``dpdk-testpmd`` with a ``net_virtio_user0`` port (a virtio-net
driver in userspace that talks vhost-user), on ``--no-huge`` memory.  That
memory is a memfd mapped shared (EAL's no-huge mode, which also forces
single-file segments), so the back-end can map it from the fd the front-end
sends in SET_MEM_TABLE; ``--in-memory`` cannot be combined with ``--no-huge``
(no-huge implies legacy memory).  Two back-ends, in the same run:

* ``offload-net``: one process for the whole run, started in a namespace
  this script creates (so its TAP lives there), pinned to CPU 0;
* ``dpdk-vhost``: a second testpmd with a ``net_vhost0`` port, its
  forwarding lcore on CPU 0, started afresh for every run.  This is the
  issue's reference: it drops what it receives and generates what it sends
  in userspace, so no frame crosses the kernel;
* ``dpdk-vhost-tap``: the same job as offload-net done by DPDK, the
  like-for-like reference: a testpmd with a ``net_vhost0`` and a ``net_tap``
  port (TAP ``bdtap0`` in the namespace, on its own bridge) in ``io``
  forwarding, both directions on one lcore, the whole process on CPU 0.

The front-end's forwarding lcore is CPU 1 (its main lcore waits on stdin).
Two directions: *guest TX* (front-end ``txonly`` -> back-end; the DPDK
back-end runs ``rxonly``, offload-net writes every frame to its TAP, whose
kernel side drops them: they are addressed to another host) and *guest RX*
(back-end -> front-end ``rxonly``; the DPDK back-end runs ``txonly``;
offload-net and dpdk-vhost-tap need frames on their TAP, which come from a
third testpmd in the namespace, ``txonly`` on a ``net_tap`` port (a second
TAP, ``bgen0``) bridged to the back-end's TAP, forwarding on CPU 1 next to
the front-end).  The
generator offers more than offload-net takes (its rate is recorded as
``offered_pps``), so the TAP's queue drops the excess, as it would on a host.
A ``net_af_packet`` generator bound to offload-net's TAP was tried first and
dropped: every frame it sends stays charged to its socket until offload-net
has read it, so with the default send buffer (``wmem_default``, not
settable per namespace) few frames are in flight; the generator sleeps in
``poll`` for send space on a busy CPU and offered only what offload-net took
(16-30k packets/s, offload-net at 10% CPU).  Frames are UDP/IPv4, 64 and 1500 bytes including the
Ethernet header.

A run: start what the case needs, wait until the measured counter moves,
``--warmup`` seconds, then read the front-end's port counters (``opackets``
for TX, ``ipackets`` for RX) and the back-end process's utime+stime
(``/proc/PID/stat``, all threads) at both ends of ``--seconds``.  Counters
come from DPDK's telemetry socket (``/ethdev/stats,0``).  Each case runs
``--runs`` times, alternating between the back-ends, and the tables give the
medians (min-max in the JSON).  testpmd processes stop on a newline on stdin
(their clean exit), then SIGTERM/SIGKILL; their runtime directories under
``/var/run/dpdk``, the sockets, offload-net, its TAP and the namespace are
removed at the end, also on failure.

Both back-ends share CPU 0 with whatever else runs there, so the packet rates
follow the share of that CPU each gets; ``backend_cpu_util`` (CPU seconds
per second) records it.  The DPDK back-end busy-polls, so its CPU per packet
is the CPU it was given divided by the packets it moved: an upper bound, not
a cost per packet.  offload-net sleeps when idle, so its figure is its cost.

Results go to ``bench/results/net.json`` and, as tables, between the
``<!-- net:begin -->``/``<!-- net:end -->`` markers of ``docs/benchmarks.md``
(other sections are left alone).  A failed run is recorded and makes the exit
status 1; the other runs still happen.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.doc import write_section
from bench.net_report import (
    BACKENDS,
    DIRECTIONS,
    FRAME_SIZES,
    RUN_HEADER,
    Backend,
    CaseSummary,
    Direction,
    RunResult,
    SendResult,
    compare,
    render_markdown,
    run_row,
    summarize,
    summarize_send,
)
from bench.net_send import SEND_MODES, SendBench
from tools.region.netns import NetNamespace

BACKEND_CPU = 0  # offload-net, and the DPDK back-end's forwarding lcore
FRONTEND_CPU = 1  # the front-end's (and the RX generator's) forwarding lcore
GUEST_MAC = "52:54:00:be:00:01"
TAP = "bnet0"  # offload-net's
GEN_TAP = "bgen0"  # the RX generator's (DPDK net_tap)
DPDK_TAP = "bdtap0"  # dpdk-vhost-tap's (DPDK net_tap, port 1)
BRIDGE = "bbr0"  # offload-net's TAP and, in its RX runs, the generator's
DPDK_BRIDGE = "bbr1"  # dpdk-vhost-tap's TAP and, in its RX runs, the generator's
QUEUE_SIZE = 1024
MBUFS = 8192
EAL_MEMORY_MB = 256
REPO = Path(__file__).resolve().parent.parent
DPDK_RUN_DIR = Path("/var/run/dpdk")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A process did not start, died, or its counters did not move."""


# --------------------------------------------------------------------------- processes


def find_testpmd() -> str:
    found = shutil.which("dpdk-testpmd")
    if found is None:
        raise BenchError("dpdk-testpmd not found (Debian package dpdk)")
    return found


def find_offload_net() -> str:
    venv_bin = Path(sys.executable).parent / "offload-net"
    if venv_bin.exists():
        return str(venv_bin)
    found = shutil.which("offload-net")
    if found is None:
        raise BenchError("offload-net not found (pip install -e . provides it)")
    return found


def dpdk_version() -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "dpdk"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"DPDK {out.strip()}"


def cpu_seconds(pid: int) -> float:
    """utime+stime of every thread of *pid*."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class _Process:
    """A child with a log file; ``stop()`` escalates from ``_polite_stop`` to SIGKILL."""

    name = "process"

    def __init__(self, workdir: Path, tag: str) -> None:
        self.log_path = workdir / f"{tag}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str], *, stdin: int | None = subprocess.DEVNULL) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdin=stdin, stdout=log, stderr=log)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line for line in text.splitlines()[-lines:] if line.strip())

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.name} exited: {self.log_tail()}")

    def _polite_stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                self._polite_stop()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.proc = None


class Testpmd(_Process):
    """One ``dpdk-testpmd`` with one vdev port, forwarding on one lcore.

    Non-interactive; it forwards until a newline arrives on stdin.  Each has
    its own ``--file-prefix`` (its runtime directory, removed on stop).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        role: str,
        vdevs: list[str],
        mode: str,
        frame: int,
        fwd_cpu: int,
        netns: str | None = None,
        extra: list[str] | None = None,
        one_cpu: bool = False,
    ) -> None:
        super().__init__(workdir, role)
        self.name = f"testpmd ({role})"
        self.prefix = f"bmaas-{role}-{secrets.token_hex(3)}"
        # lcore 1 is the main lcore (it waits on stdin), lcore 0 forwards.  With
        # one_cpu both run on fwd_cpu (and every other thread of the process is
        # pinned there too): a back-end that must leave the other CPU to the
        # front-end and the generator.
        main_cpu = fwd_cpu if one_cpu else 1 - fwd_cpu
        self.argv = [
            *(["taskset", "-c", str(fwd_cpu)] if one_cpu else []),
            find_testpmd(),
            "--lcores",
            f"0@{fwd_cpu},1@{main_cpu}",
            "--main-lcore",
            "1",
            "--no-huge",
            "-m",
            str(EAL_MEMORY_MB),
            "--single-file-segments",
            "--no-pci",
            "--file-prefix",
            self.prefix,
            *(arg for vdev in vdevs for arg in ("--vdev", vdev)),
            "--",
            f"--forward-mode={mode}",
            "--nb-cores=1",
            f"--total-num-mbufs={MBUFS}",
            f"--txd={QUEUE_SIZE}",
            f"--rxd={QUEUE_SIZE}",
            f"--txpkts={frame}",
            *(extra or []),
        ]
        if netns is not None:
            self.argv = ["ip", "netns", "exec", netns, *self.argv]

    @property
    def run_dir(self) -> Path:
        return DPDK_RUN_DIR / self.prefix

    def start(self) -> Testpmd:
        self._spawn(self.argv, stdin=subprocess.PIPE)
        return self

    def port_stats(self) -> dict[str, int]:
        """Port 0's counters through the telemetry socket (ipackets, opackets, ...)."""
        path = self.run_dir / "dpdk_telemetry.v2"
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(5)
            s.connect(str(path))
            s.recv(16384)  # the greeting: version, pid, max output length
            s.send(b"/ethdev/stats,0")
            reply = json.loads(s.recv(1 << 16))
        stats = reply.get("/ethdev/stats")
        if not isinstance(stats, dict):
            raise BenchError(f"{self.name}: no port 0 stats in telemetry: {reply!r:.200}")
        return {k: v for k, v in stats.items() if isinstance(v, int)}

    def wait_counting(self, key: str, timeout: float) -> None:
        """Until port 0's *key* counter is non-zero."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            with contextlib.suppress(OSError, ValueError, BenchError):
                if self.port_stats().get(key, 0) > 0:
                    return
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: {key} did not move in {timeout:.0f} s")
            time.sleep(0.2)

    def _polite_stop(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(b"\n")
            self.proc.stdin.close()
        except OSError:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        proc = self.proc
        super().stop()
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)


class OffloadNet(_Process):
    """``offload-net`` in *netns* (which holds its TAP), pinned to ``BACKEND_CPU``."""

    name = "offload-net"

    def __init__(self, workdir: Path, netns: str) -> None:
        super().__init__(workdir, "offload-net")
        self.socket_path = workdir / "offload-net.sock"
        self.netns = netns
        self.argv: list[str] = []

    def start(self) -> OffloadNet:
        self.socket_path.unlink(missing_ok=True)
        self.argv = [
            "ip",
            "netns",
            "exec",
            self.netns,
            "taskset",
            "-c",
            str(BACKEND_CPU),
            find_offload_net(),
            "--socket",
            str(self.socket_path),
            "--tap",
            TAP,
            "--mac",
            GUEST_MAC,
        ]
        self._spawn(self.argv)
        deadline = time.monotonic() + 20
        while not self.socket_path.exists():
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"offload-net did not listen in 20 s: {self.log_tail()}")
            time.sleep(0.05)
        # `ip netns exec` and `taskset` exec in place, so the pid is offload-net's.
        comm = Path(f"/proc/{self.pid}/comm").read_text().strip()
        if comm in ("ip", "taskset"):
            raise BenchError(f"pid {self.pid} is {comm}, not offload-net")
        return self


# --------------------------------------------------------------------------- one run


class _Bench:
    """The namespace, offload-net, and every run; ``close()`` removes all of it."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.results: list[RunResult] = []
        self.send_results: list[SendResult] = []
        self.failures: dict[str, str] = {}
        self.ns: NetNamespace | None = None
        self.offload: OffloadNet | None = None
        self.command_lines: dict[str, str] = {}

    def _started(self, backend: Backend, direction: Direction, proc: Testpmd) -> Testpmd:
        self.command_lines[f"{backend} {direction}: {proc.name}"] = shlex.join(proc.argv)
        return proc.start()

    def _namespace(self) -> NetNamespace:
        """The namespace holding the TAPs, with one bridge per TAP-backed back-end."""
        if self.ns is None:
            self.ns = NetNamespace("bench-net").create()
            # No IPv6 chatter (router/neighbour solicitations) on the TAPs.
            self.ns.run("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
            self.ns.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            for bridge in (BRIDGE, DPDK_BRIDGE):
                self.ns.run("ip", "link", "add", bridge, "type", "bridge")
                self.ns.run("ip", "link", "set", bridge, "up")
        return self.ns

    def _offload_net(self) -> OffloadNet:
        ns = self._namespace()
        if self.offload is not None and not self.offload.alive():
            self.failures[f"offload-net died ({len(self.failures)})"] = self.offload.log_tail()
            self.offload.stop()
            self.offload = None
        if self.offload is None:
            self.offload = OffloadNet(self.workdir, ns.name).start()
            self.command_lines["offload-net"] = shlex.join(self.offload.argv)
            # The generator's TAP joins this bridge in each RX run.
            ns.run("ip", "link", "set", TAP, "master", BRIDGE)
        return self.offload

    def _bridge_tap(self, tap: str, bridge: str, owner: Testpmd) -> None:
        """Put a DPDK ``net_tap`` port's TAP (created when the port starts) on *bridge*."""
        ns = self._namespace()
        deadline = time.monotonic() + 30
        while ns.run("ip", "link", "show", tap, check=False).returncode:
            owner.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"no {tap} after 30 s: {owner.log_tail()}")
            time.sleep(0.1)
        ns.run("ip", "link", "set", tap, "master", bridge)

    def run(self) -> None:
        if "pps" in self.args.parts:
            for frame in self.args.frames:
                for direction in self.args.directions:
                    for i in range(self.args.runs):
                        for backend in self.args.backends:
                            self._run(backend, direction, frame, i)
        if "send" in self.args.parts:
            self._run_send()

    def _run_send(self) -> None:
        """The 64 KiB send case (``bench.net_send``), modes alternating per round."""
        offload = self._offload_net()
        sender = SendBench(
            netns=self._namespace().name,
            bridge=BRIDGE,
            socket_path=offload.socket_path,
            guest_mac=GUEST_MAC,
            frontend_cpu=FRONTEND_CPU,
            backend_cpu_seconds=offload.cpu_seconds,
        )
        try:
            for i in range(self.args.send_runs):
                for mode in SEND_MODES:
                    name = f"send {mode} run {i + 1}"
                    try:
                        res = sender.run(mode, i, self.args.send_seconds)
                    except (OSError, RuntimeError, AssertionError) as exc:
                        self.failures[name] = f"{type(exc).__name__}: {exc}"
                        print(f"| {name}: FAILED: {self.failures[name]} |", flush=True)
                        continue
                    print(
                        f"| send | {mode} | run {res.run} | {res.mib_per_s:.1f} MiB/s "
                        f"| {res.frames_per_mib:.0f} frames/MiB "
                        f"| {res.backend_cpu_ms_per_mib:.2f} ms/MiB |",
                        flush=True,
                    )
                    self.send_results.append(res)
        finally:
            sender.close()

    def _run(self, backend: Backend, direction: Direction, frame: int, index: int) -> None:
        name = f"{backend} {direction} {frame} B run {index + 1}"
        procs: list[Testpmd] = []
        try:
            res = self._measure(backend, direction, frame, index, procs)
        except (BenchError, OSError) as exc:
            self.failures[name] = f"{type(exc).__name__}: {exc}"
            print(f"| {name}: FAILED: {self.failures[name]} |", flush=True)
            return
        finally:
            for p in reversed(procs):  # generator, then front-end, then back-end
                p.stop()
        print(run_row(res), flush=True)
        self.results.append(res)

    def _measure(
        self,
        backend: Backend,
        direction: Direction,
        frame: int,
        index: int,
        procs: list[Testpmd],
    ) -> RunResult:
        wd = self.workdir
        fe_mode, key = ("txonly", "opackets") if direction == "tx" else ("rxonly", "ipackets")
        target: _Process
        generator: Testpmd | None = None
        bridge = BRIDGE
        if backend == "dpdk-vhost-tap":
            # Like offload-net: frames between the vhost-user port and a TAP
            # (testpmd's io forwarding, both ways), in the same namespace.
            sock = wd / "dpdk-vhost-tap.sock"
            sock.unlink(missing_ok=True)
            bridge = DPDK_BRIDGE
            vhost = Testpmd(
                wd,
                role="vhost-tap",
                vdevs=[f"net_vhost0,iface={sock},queues=1", f"net_tap0,iface={DPDK_TAP}"],
                mode="io",
                frame=frame,
                fwd_cpu=BACKEND_CPU,
                netns=self._namespace().name,
                one_cpu=True,  # like offload-net (taskset); CPU 1 is the generator's
            )
            procs.append(self._started(backend, direction, vhost))
            _wait_for(sock, vhost)
            self._bridge_tap(DPDK_TAP, bridge, vhost)
            target = vhost
        elif backend == "dpdk-vhost":
            sock = wd / "dpdk-vhost.sock"
            sock.unlink(missing_ok=True)
            vhost = Testpmd(
                wd,
                role="vhost",
                vdevs=[f"net_vhost0,iface={sock},queues=1"],
                mode="rxonly" if direction == "tx" else "txonly",
                frame=frame,
                fwd_cpu=BACKEND_CPU,
            )
            procs.append(self._started(backend, direction, vhost))
            _wait_for(sock, vhost)
            target = vhost
        else:
            target = self._offload_net()
            sock = target.socket_path
        vdev = f"net_virtio_user0,path={sock},queues=1,queue_size={QUEUE_SIZE},mac={GUEST_MAC}"
        fe = Testpmd(
            wd, role="guest", vdevs=[vdev], mode=fe_mode, frame=frame, fwd_cpu=FRONTEND_CPU
        )
        procs.append(self._started(backend, direction, fe))
        if backend != "dpdk-vhost" and direction == "rx":
            generator = Testpmd(
                wd,
                role="gen",
                vdevs=[f"net_tap0,iface={GEN_TAP}"],
                mode="txonly",
                frame=frame,
                fwd_cpu=FRONTEND_CPU,
                netns=self._namespace().name,
                extra=[f"--eth-peer=0,{GUEST_MAC}"],
            )
            procs.append(self._started(backend, direction, generator))
            self._bridge_tap(GEN_TAP, bridge, generator)
        fe.wait_counting(key, 30)
        time.sleep(self.args.warmup)
        for p in (fe, target, *([generator] if generator else [])):
            p.check_alive()
        t0, c0, cpu0 = time.perf_counter(), fe.port_stats()[key], target.cpu_seconds()
        g0 = generator.port_stats()["opackets"] if generator else 0
        time.sleep(self.args.seconds)
        t1, c1, cpu1 = time.perf_counter(), fe.port_stats()[key], target.cpu_seconds()
        g1 = generator.port_stats()["opackets"] if generator else 0
        for p in (fe, target):
            p.check_alive()
        elapsed = t1 - t0
        packets = c1 - c0
        if packets <= 0:
            raise BenchError(f"no packets in {elapsed:.1f} s: {target.log_tail()}")
        return RunResult(
            backend=backend,
            direction=direction,
            frame=frame,
            run=index + 1,
            packets=packets,
            seconds=round(elapsed, 3),
            pps=round(packets / elapsed, 1),
            backend_cpu_us_per_pkt=round((cpu1 - cpu0) * 1e6 / packets, 3),
            backend_cpu_util=round((cpu1 - cpu0) / elapsed, 3),
            offered_pps=round((g1 - g0) / elapsed, 1) if generator else None,
        )

    def close(self) -> None:
        if self.offload is not None:
            if not self.offload.alive():
                self.failures["offload-net died"] = self.offload.log_tail()
            self.offload.stop()
            self.offload = None
        if self.ns is not None:
            self.ns.close()
            self.ns = None


def _wait_for(path: Path, proc: _Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        proc.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{proc.name}: no {path} after {timeout:.0f} s: {proc.log_tail()}")
        time.sleep(0.05)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "dpdk": dpdk_version(),
        "python": platform.python_version(),
        "cpu": cpu,
        "loadavg_before": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def _csv(parse: Callable[[str], Any], allowed: tuple[Any, ...]) -> Callable[[str], list[Any]]:
    def convert(text: str) -> list[Any]:
        values = [parse(v) for v in text.split(",") if v]
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(map(str, allowed))}")
        return values

    return convert


@contextlib.contextmanager
def _workdir(root: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bmaas-bench-net-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.net", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0, help="uncounted seconds per run")
    p.add_argument("--runs", type=int, default=5, help="runs per case (median reported)")
    p.add_argument("--frames", type=_csv(int, FRAME_SIZES), default=list(FRAME_SIZES))
    p.add_argument("--directions", type=_csv(str, DIRECTIONS), default=list(DIRECTIONS))
    p.add_argument("--backends", type=_csv(str, BACKENDS), default=list(BACKENDS))
    p.add_argument(
        "--parts",
        type=_csv(str, ("pps", "send")),
        default=["pps", "send"],
        help="pps: packet rates against DPDK; send: 64 KiB TCP sends with and without TSO",
    )
    p.add_argument("--send-seconds", type=float, default=3.0, help="seconds per send run")
    p.add_argument("--send-runs", type=int, default=5, help="rounds of the send modes")
    p.add_argument("--tmpdir", default="/tmp", help="where sockets and logs live")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "net.json")
    p.add_argument("--markdown", type=Path, default=REPO / "docs" / "benchmarks.md")
    p.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="only rewrite the Markdown section from a results file this script wrote",
    )
    args = p.parse_args(argv)
    if args.render is not None:
        stored: dict[str, Any] = json.loads(args.render.read_text())
        cases = [CaseSummary(**c) for c in stored["summary"]]
        body = render_markdown(stored, cases)
        write_section("net", "Network (bench/net.py)", body, doc=args.markdown)
        return 0
    if os.geteuid() != 0:
        p.error("needs root (network namespace, TAP)")
    find_testpmd()
    machine = machine_info()

    print(RUN_HEADER, flush=True)
    with _workdir(args.tmpdir) as workdir:
        bench = _Bench(args, workdir)
        try:
            bench.run()
        finally:
            bench.close()
    summaries = summarize(bench.results)
    report: dict[str, Any] = {
        "benchmark": "net",
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {**machine, "loadavg_after": " / ".join(f"{x:.1f}" for x in os.getloadavg())},
        "params": {
            "seconds": args.seconds,
            "warmup": args.warmup,
            "runs": args.runs,
            "queue_size": QUEUE_SIZE,
            "backend_cpu": BACKEND_CPU,
            "frontend_cpu": FRONTEND_CPU,
            "send_seconds": args.send_seconds,
            "send_runs": args.send_runs,
        },
        "summary": [asdict(s) for s in summaries],
        "send_summary": summarize_send(bench.send_results),
        "send_results": [asdict(r) for r in bench.send_results],
        "comparison": compare(summaries, bench.results),
        "runs": [asdict(r) for r in bench.results],
        "failures": bench.failures,
        "command_lines": bench.command_lines,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    body = render_markdown(report, summaries)
    write_section("net", "Network (bench/net.py)", body, doc=args.markdown)
    print()
    print(body)
    return 1 if bench.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
