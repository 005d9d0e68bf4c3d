"""``bench/control_plane.py`` stops every process it started when it is
interrupted: a small run gets SIGTERM during its idle phase, and afterwards
none of its descendants (etcd, the control-plane replicas, the agent
workers) is left running."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _children() -> dict[int, list[int]]:
    """ppid -> pids, from /proc."""
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry.name))
    return out


def _descendants(pid: int) -> set[int]:
    tree = _children()
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_benchmark_leaves_no_process_behind(sig: signal.Signals) -> None:
    bench = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.control_plane",
            "--no-write",
            "--hosts",
            "8",
            "--tenants",
            "2",
            "--workers",
            "2",
            "--agent-procs",
            "2",
            "--idle-seconds",
            "300",
            "--seconds",
            "300",
            "--heartbeat-interval",
            "1",
            "--heartbeat-ttl",
            "3",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    assert bench.stderr is not None
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        buf = b""
        while b"idle phase" not in buf:
            assert time.monotonic() < deadline, f"the bench never reached its idle phase: {buf!r}"
            assert bench.poll() is None, f"the bench exited {bench.returncode}: {buf!r}"
            ready, _, _ = select.select([bench.stderr], [], [], 1.0)
            if ready:
                buf += os.read(bench.stderr.fileno(), 65536)
        started = _descendants(bench.pid)
        cmdlines = " | ".join(_cmdline(p) for p in started)
        assert cmdlines.count("--agent-worker") == 2, cmdlines
        assert "etcd" in cmdlines and "control" in cmdlines, cmdlines
        bench.send_signal(sig)
        rc = bench.wait(120)
        assert rc == 130
        deadline = time.monotonic() + 30
        while left := [p for p in started if _running(p)]:
            assert time.monotonic() < deadline, [_cmdline(p) for p in left]
            time.sleep(0.1)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for pid in started:  # only what this run started, by pid
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        bench.stderr.close()
