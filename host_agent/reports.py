"""What the agent reports up its Connect stream, as plain dataclasses.

The reconciler produces them (deduplicated, resent after a reconnect);
``host_agent.client`` converts them to ``AgentMessage`` at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass

from host_agent.desired import Phase


@dataclass(frozen=True, slots=True)
class InstanceReport:
    instance: str
    phase: Phase
    generation: int
    message: str = ""


@dataclass(frozen=True, slots=True)
class HostReport:
    wiped_epoch: int
    message: str = ""


@dataclass(frozen=True, slots=True)
class ConsoleReport:
    instance: str
    tail: bytes


Report = InstanceReport | HostReport | ConsoleReport
