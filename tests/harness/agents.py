"""Real ``bmaas-agent`` instances for tests: in-process ``Agent`` objects
(fake power driver, no devices unless asked) or ``bmaas-agent`` processes.

- ``agent_config`` / ``running_agent``: one in-process agent;
- ``running_agents``: one in-process agent per host of a world (host name ->
  credential), all stopped on exit;
- ``AgentProcess``: ``python -m host_agent.main`` with a TOML file choosing
  the ``fake`` driver, for tests whose control plane is a process too.

Several endpoints (``endpoints=("127.0.0.1:1", "127.0.0.1:2")``) make the
agent rotate through them when a stream ends, as it follows replicas.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

from host_agent.agent import Agent
from host_agent.config import AgentConfig

ROOT = Path(__file__).resolve().parents[2]
#: run dirs (sockets, pid files) of this test session's agents; removed at its end
#: (one root per session, so concurrent sessions never remove each other's)
AGENT_RUN_ROOT = Path("/run/bmaas-test") / str(os.getpid())


def _run_dir(state_dir: Path) -> Path:
    return AGENT_RUN_ROOT / hashlib.sha256(str(state_dir).encode()).hexdigest()[:10]


def _endpoints(port: int | str | Iterable[int | str]) -> tuple[str, ...]:
    if isinstance(port, int | str):
        port = (port,)
    return tuple(p if isinstance(p, str) else f"127.0.0.1:{p}" for p in port)


def agent_config(
    *,
    port: int | str | Iterable[int | str],
    host_id: str,
    credential: str,
    state_dir: Path,
    **kw: Any,
) -> AgentConfig:
    """*port*: a port on 127.0.0.1, a ``HOST:PORT``, or several of either."""
    kw.setdefault("run_dir_", _run_dir(state_dir))
    kw.setdefault("power_driver", "fake")
    kw.setdefault("resync", 0.5)
    kw.setdefault("max_backoff", 1.0)
    return AgentConfig(
        host_id=host_id,
        endpoints=_endpoints(port),
        credential=credential,
        state_dir=state_dir,
        **kw,
    )


@contextlib.asynccontextmanager
async def running_agent(config: AgentConfig) -> AsyncIterator[Agent]:
    async with Agent(config) as agent:
        yield agent


@contextlib.asynccontextmanager
async def running_agents(
    *,
    port: int | str | Iterable[int | str],
    hosts: Mapping[str, str],
    state_root: Path,
    **kw: Any,
) -> AsyncIterator[dict[str, Agent]]:
    """An agent for every ``hosts/{id} -> credential`` of *hosts*, keyed by host name."""
    endpoints = _endpoints(port)
    async with contextlib.AsyncExitStack() as stack:
        agents: dict[str, Agent] = {}
        for name, credential in hosts.items():
            host_id = name.removeprefix("hosts/")
            config = agent_config(
                port=endpoints,
                host_id=host_id,
                credential=credential,
                state_dir=state_root / host_id,
                **kw,
            )
            agents[name] = await stack.enter_async_context(running_agent(config))
        yield agents


class AgentProcess:
    """``bmaas-agent`` (``python -m host_agent.main``) on the fake power driver.

    ``stop()`` is SIGTERM (the agent leaves its fake server as it is)."""

    def __init__(
        self,
        *,
        endpoints: Iterable[int | str],
        host_id: str,
        credential: str,
        state_dir: Path,
        resync: float = 0.5,
        max_backoff: float = 1.0,
    ) -> None:
        self.state_dir = state_dir
        self.endpoints = _endpoints(endpoints)
        self.host_id = host_id
        self.credential = credential
        self.resync = resync
        self.max_backoff = max_backoff
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="bmaas-agent-", suffix=".log")[1])

    def start(self) -> AgentProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cred = self.state_dir / "credential"
        cred.write_text(self.credential + "\n")
        cred.chmod(0o600)
        toml = self.state_dir / "agent.toml"
        toml.write_text(
            'power_driver = "fake"\n'
            f"resync = {self.resync}\n"
            f"max_backoff = {self.max_backoff}\n"
            f'run_dir = "{_run_dir(self.state_dir)}"\n'
        )
        args = [
            sys.executable,
            "-m",
            "host_agent.main",
            "--control-plane",
            ",".join(self.endpoints),
            "--host-id",
            self.host_id,
            "--credential-file",
            str(cred),
            "--state-dir",
            str(self.state_dir / "state"),
            "--config",
            str(toml),
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env
            )
        return self

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def close(self) -> None:
        self.stop()
        self.log.unlink(missing_ok=True)

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def kill_processes_under(*paths: Path) -> list[int]:
    """SIGKILL every process whose command line names one of *paths* (a
    test's servers and back-ends); returns their pids."""
    marks = [str(p) for p in paths]
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmdline for m in marks):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
    return killed
