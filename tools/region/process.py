"""Long-lived child processes of a region, and how to stop them.

``spawn`` starts a command in the repository root with its stdout and
stderr appended to a log file.  An *attached* child belongs to the caller,
which stops it through the ``Popen``; a *detached* one runs in its own
session with stdin from ``/dev/null``, so it outlives the launcher (``make
demo`` returns and the region keeps running), and is stopped later, from
any process, by its recorded pid with ``stop_process``.

``processes_under`` finds processes whose command line names one of some
paths (the servers and back-ends an agent leaves running from its state
and run directories); ``kill_processes_under`` SIGKILLs them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tools.region.paths import ROOT


class StartError(RuntimeError):
    """A component exited, or did not become ready, while it was being started."""


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    detached: bool = False,
) -> subprocess.Popen[bytes]:
    """Start *argv* (cwd: the repository root), stdout and stderr appended to *log*."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=detached,
        )


def log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """*pid* runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def stop_process(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM *pid*, SIGKILL it if it still runs after *timeout* seconds, and
    reap it if it is a child of this process.  For a detached process, from
    the pid its launcher recorded."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def processes_under(*paths: Path, unless: str = "") -> list[int]:
    """Pids (not this process's) whose command line names one of *paths*,
    except those whose command line contains *unless* (when given)."""
    marks = [str(p) for p in paths]
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmdline for m in marks) and not (unless and unless in cmdline):
            found.append(int(proc.name))
    return found


def kill_processes_under(*paths: Path) -> list[int]:
    """SIGKILL every process whose command line names one of *paths* (what a
    stopped agent left running from its directories); returns their pids."""
    killed = []
    for pid in processes_under(*paths):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed
