"""What a host agent reports: the *observed* state of its host.

Reports live apart from the host record (the store keeps one per host under
``agent_reports/``), so heartbeats and status never bump the host's
``mod_revision`` and never make the scheduler's compare-and-swap fail.
Controllers read the latest report by host key and converge:

- ``instance`` + ``instance_phase``: how far the agent got with the instance
  bound to the host (PROVISIONING -> STARTING -> RUNNING, STOPPED, FAILED).
  A report naming another instance than ``Host.assigned_instance``, or an
  older ``generation`` than the instance's (a stop/start/reboot the agent has
  not acted on yet), is stale and ignored.  STOPPED while RUNNING means the
  server powered itself off (the guest shut down): the instance is STOPPED.
- ``wiped_epoch``: the highest ``Host.cleaning_epoch`` whose secure wipe of
  local disks has finished; CLEANING ends when it reaches the host's epoch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from control_plane.domain.lifecycle import INSTANCE_TRANSITIONS, InstanceEvent, InstanceState


class AgentPhase(enum.StrEnum):
    NONE = "NONE"
    PROVISIONING = "PROVISIONING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentReport:
    host: str
    instance: str = ""
    instance_phase: AgentPhase = AgentPhase.NONE
    #: the ``Instance.generation`` the agent has converged to
    generation: int = 0
    wiped_epoch: int = 0
    message: str = ""
    report_time: float = 0.0
    etag: str = ""


def events_for_report(state: InstanceState, phase: AgentPhase) -> list[InstanceEvent]:
    """The instance events that bring *state* up to the agent-reported *phase*
    (empty when the report adds nothing).  The caller has already checked that
    the report is about this instance and at least as new as its generation."""
    if phase == AgentPhase.FAILED:
        return [InstanceEvent.FAIL] if InstanceEvent.FAIL in INSTANCE_TRANSITIONS[state] else []
    if state in _BOOT_ORDER and phase in _BOOT_ORDER_PHASE:
        have, want = _BOOT_ORDER.index(state), _BOOT_ORDER_PHASE.index(phase)
        return list(_BOOT_EVENTS[have:want])
    if state == InstanceState.REBOOTING and phase == AgentPhase.RUNNING:
        return [InstanceEvent.STARTED]
    if state in (InstanceState.STOPPING, InstanceState.RUNNING) and phase == AgentPhase.STOPPED:
        return [InstanceEvent.STOPPED]
    return []


_BOOT_ORDER = (
    InstanceState.SCHEDULED,
    InstanceState.PROVISIONING,
    InstanceState.STARTING,
    InstanceState.RUNNING,
)
_BOOT_ORDER_PHASE = (
    AgentPhase.NONE,
    AgentPhase.PROVISIONING,
    AgentPhase.STARTING,
    AgentPhase.RUNNING,
)
_BOOT_EVENTS = (InstanceEvent.PROVISION, InstanceEvent.PROVISIONED, InstanceEvent.STARTED)
