"""Apply a lifecycle event to a record: the pure glue between the tables in
``lifecycle`` and the records, so every caller changes state the same way.

``apply_instance_event`` sets ``state`` and ``target_state`` (from
``INSTANCE_TARGETS``), records ``failure_reason`` on FAIL (and clears it
when a FAILED instance is rebooted: the reboot is the recovery), and bumps
``generation`` on STOP, START and REBOOT (a new desired power state for the
agent) and on HOST_FAILED (a failover: the last report of a host the
instance ran on before says RUNNING at the old generation, and must never
complete the new placement if the instance lands on that host again).
``apply_host_event`` bumps ``cleaning_epoch`` and stamps
``cleaning_started_time`` on entering CLEANING, and stamps
``last_cleaned_time`` when cleaning completes.  Both raise
``InvalidTransition`` for an edge the table does not have.
"""

from __future__ import annotations

import dataclasses

from control_plane.domain.compute import Instance
from control_plane.domain.host import Host
from control_plane.domain.lifecycle import (
    HostEvent,
    HostState,
    InstanceEvent,
    InstanceState,
    host_transition,
    instance_target,
    instance_transition,
)

#: Events that give the agent a new desired power state.
_NEW_GENERATION = frozenset(
    {InstanceEvent.STOP, InstanceEvent.START, InstanceEvent.REBOOT, InstanceEvent.HOST_FAILED}
)


def apply_instance_event(instance: Instance, event: InstanceEvent, *, reason: str = "") -> Instance:
    new_state = instance_transition(instance.state, event)
    bump = 1 if event in _NEW_GENERATION else 0
    recovering = new_state == InstanceState.REBOOTING and instance.state == InstanceState.FAILED
    return dataclasses.replace(
        instance,
        state=new_state,
        target_state=instance_target(new_state),
        failure_reason=reason
        if event == InstanceEvent.FAIL
        else ("" if recovering else instance.failure_reason),
        generation=instance.generation + bump,
    )


def apply_host_event(host: Host, event: HostEvent, *, now: float) -> Host:
    new_state = host_transition(host.state, event)
    changes: dict[str, object] = {"state": new_state}
    if new_state == HostState.CLEANING and host.state != HostState.CLEANING:
        changes["cleaning_epoch"] = host.cleaning_epoch + 1
        changes["cleaning_started_time"] = now
    if host.state == HostState.CLEANING and new_state == HostState.AVAILABLE:
        changes["last_cleaned_time"] = now
    return dataclasses.replace(host, **changes)  # type: ignore[arg-type]
