"""Real ``bmaas-agent`` instances for tests: in-process ``Agent`` objects
(fake power driver, no devices unless asked) or ``bmaas-agent`` processes."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from host_agent.agent import Agent
from host_agent.config import AgentConfig


def agent_config(
    *, port: int | str, host_id: str, credential: str, state_dir: Path, **kw: Any
) -> AgentConfig:
    endpoints = (port,) if isinstance(port, str) else (f"127.0.0.1:{port}",)
    run = Path("/run/bmaas-test") / hashlib.sha256(str(state_dir).encode()).hexdigest()[:10]
    kw.setdefault("run_dir_", run)
    kw.setdefault("power_driver", "fake")
    kw.setdefault("resync", 0.5)
    kw.setdefault("max_backoff", 1.0)
    return AgentConfig(
        host_id=host_id,
        endpoints=endpoints,
        credential=credential,
        state_dir=state_dir,
        **kw,
    )


@contextlib.asynccontextmanager
async def running_agent(config: AgentConfig) -> AsyncIterator[Agent]:
    async with Agent(config) as agent:
        yield agent
