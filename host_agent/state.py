"""The agent's memory across restarts: one JSON file in ``--state-dir``.

It records what the agent has *done*, never what it was asked: per instance
the action generation it last acted on (so a restarted agent does not
reboot a server twice for one request), whether provisioning failed for
good, which data volumes the server has; and the highest cleaning epoch it
has wiped.  Everything else (is the server on, is a back-end alive) is
observed again after a restart.  Writes go through ``files.write_private``:
a temp file, fsynced and renamed, so a ``kill -9`` leaves the old or the new
file, never half of one, mode 0600 in a directory only the agent can enter.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from host_agent.files import write_private


@dataclass(slots=True)
class InstanceRecord:
    name: str
    #: the DesiredInstance.generation last acted on; -1: never powered yet
    generation: int = -1
    failed: str = ""
    #: data volumes plugged into the server (AIP names)
    attached: list[str] = field(default_factory=list)
    #: network interfaces plugged into the server (AIP names)
    nics: list[str] = field(default_factory=list)


@dataclass(slots=True)
class AgentState:
    wiped_epoch: int = 0
    instances: dict[str, InstanceRecord] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> AgentState:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        return cls(
            wiped_epoch=int(raw.get("wiped_epoch", 0)),
            instances={
                name: InstanceRecord(**rec) for name, rec in raw.get("instances", {}).items()
            },
        )

    def save(self, path: Path) -> None:
        """Write the state to *path*: 0600 in a 0700 directory, atomically (``files``)."""
        write_private(path, json.dumps(asdict(self), indent=1, sort_keys=True).encode())
