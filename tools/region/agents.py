"""Real host agents: in-process ``Agent`` objects (fake power driver, no
devices unless asked) or ``bmaas-agent`` processes.

- ``agent_config`` / ``running_agent``: one in-process agent;
- ``running_agents``: one in-process agent per host of a world (host name ->
  credential), all stopped on exit;
- ``AgentProcess``: ``python -m host_agent.main`` (what the ``bmaas-agent``
  script runs) with a credential file and a TOML file written into its
  directory; by default the ``fake`` driver with quick resync and backoff,
  or whatever settings the caller gives (the demo's qemu hosts).
  ``detached=True`` runs it in its own session, outliving the launcher.

Several endpoints (``endpoints=("127.0.0.1:1", "127.0.0.1:2")``) make the
agent rotate through them when a stream ends, as it follows replicas.
Agents speak TLS trusting ``default_pki()``'s CA unless given another
``ClientTls`` (``tls=``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bmaas_tls import ClientTls
from host_agent.agent import Agent
from host_agent.config import AgentConfig, LocalDisk
from tools.region.pki import default_pki
from tools.region.process import log_tail, spawn

#: default run dirs (sockets, pid files) of the agents this process starts; its
#: owner removes it when done (one root per process, so that concurrent test
#: sessions and benchmarks never remove each other's)
AGENT_RUN_ROOT = Path("/run/bmaas-test") / str(os.getpid())

#: a settings value of the agent's TOML file
TomlValue = str | int | float | bool | Path
#: ``AgentProcess``'s default settings: the fake power driver, quick to react
FAST_FAKE_AGENT: Mapping[str, TomlValue] = {
    "power_driver": "fake",
    "resync": 0.5,
    "max_backoff": 1.0,
}


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
    kw.setdefault("tls", default_pki().client_tls())
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
    """``bmaas-agent`` (``python -m host_agent.main``) for one host.

    Its directory *state_dir* gets ``credential``, ``agent.toml`` (*settings*,
    *local_disks*, and ``run_dir`` under ``AGENT_RUN_ROOT`` unless the
    settings name one) and the agent's own ``state/``.  The log is a temp
    file removed by ``close()``, or *log* (the caller's, kept).  ``stop()`` is
    SIGTERM (the agent leaves its servers as they are)."""

    def __init__(
        self,
        *,
        endpoints: Iterable[int | str],
        host_id: str,
        credential: str,
        state_dir: Path,
        settings: Mapping[str, TomlValue] = FAST_FAKE_AGENT,
        local_disks: Sequence[LocalDisk] = (),
        log: Path | None = None,
        detached: bool = False,
        tls: ClientTls | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.tls = tls if tls is not None else default_pki().client_tls()
        self.endpoints = _endpoints(endpoints)
        self.host_id = host_id
        self.credential = credential
        self.settings = {"run_dir": _run_dir(state_dir), **settings}
        self.local_disks = tuple(local_disks)
        self.detached = detached
        self.proc: subprocess.Popen[bytes] | None = None
        self._owns_log = log is None
        if log is None:
            fd, name = tempfile.mkstemp(prefix="bmaas-agent-", suffix=".log")
            os.close(fd)
            log = Path(name)
        self.log = log

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> AgentProcess:
        """Write its files and spawn it (it connects on its own; nothing to wait for)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cred = self.state_dir / "credential"
        cred.write_text(self.credential + "\n")
        cred.chmod(0o600)
        toml = self.state_dir / "agent.toml"
        toml.write_text(agent_toml(self.settings, self.local_disks))
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
            *tls_flags(self.tls),
        ]
        self.proc = spawn(args, log=self.log, detached=self.detached)
        return self

    def tail(self, lines: int = 30) -> str:
        return log_tail(self.log, lines)

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
        """Stop it; remove the log if it is a temp file."""
        self.stop()
        if self._owns_log:
            self.log.unlink(missing_ok=True)

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def tls_flags(tls: ClientTls) -> list[str]:
    """``bmaas-agent`` flags for *tls*."""
    if tls.insecure:
        return ["--insecure"]
    flags = ["--ca", str(tls.ca)] if tls.ca else []
    if tls.cert and tls.key:
        flags += ["--cert", str(tls.cert), "--key", str(tls.key)]
    return flags


def agent_toml(settings: Mapping[str, TomlValue], local_disks: Sequence[LocalDisk] = ()) -> str:
    """The agent's TOML configuration file (``host_agent.config``) for *settings*."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in settings.items()]
    for disk in local_disks:
        lines += ["[[local_disks]]", f"name = {_toml_value(disk.name)}",
                  f"size_gib = {disk.size_gib}", f"kind = {_toml_value(disk.kind)}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _toml_value(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
