"""Host and instance lifecycles as explicit transition tables.

Each table is ``{state: {event: next_state}}`` (Ironic ``state_machine``, h11
``EVENT_TRIGGERED_TRANSITIONS``) with no side effects in it: callers compute
the next state with the pure ``transition(state, event)``, which raises
``InvalidTransition`` for a missing edge, and write the result through the
store with a compare-and-swap.

Host::

    ENROLLED --provide--> CLEANING            (its agent registered: wipe before the first tenant)
    AVAILABLE --allocate--> ALLOCATED --release--> CLEANING
    CLEANING --clean_done--> AVAILABLE        (the only way into AVAILABLE: a wipe report)
    CLEANING --clean_failed--> MAINTENANCE
    AVAILABLE|ALLOCATED|CLEANING --heartbeat_lost--> UNREACHABLE
    UNREACHABLE --heartbeat_resumed--> CLEANING       (no instance bound: re-wipe)
    UNREACHABLE --heartbeat_resumed_allocated--> ALLOCATED
    UNREACHABLE --release--> UNREACHABLE     (its instance was terminated meanwhile)
    ENROLLED|AVAILABLE|CLEANING|UNREACHABLE --maintain--> MAINTENANCE
    MAINTENANCE --unmaintain--> CLEANING
    ENROLLED|MAINTENANCE --decommission--> DECOMMISSIONED (terminal)

Instance (every transient state names its target in ``INSTANCE_TARGETS``)::

    PENDING --schedule--> SCHEDULED --provision--> PROVISIONING --provisioned--> STARTING
    STARTING --started--> RUNNING
    RUNNING --stop--> STOPPING --stopped--> STOPPED --start--> STARTING
    RUNNING --stopped--> STOPPED              (the server powered itself off)
    RUNNING --reboot--> REBOOTING --started--> RUNNING
    any non-final state --terminate--> TERMINATING --terminated--> TERMINATED
    any transient state or RUNNING --fail--> FAILED (with a reason) --terminate--> TERMINATING
    FAILED --reboot--> REBOOTING              (a guest that died: the agent resets its server;
                                               a provisioning failure is reported FAILED again)
    SCHEDULED|PROVISIONING|STARTING|RUNNING|REBOOTING --host_failed--> PENDING
                                              (its host stayed UNREACHABLE past the failover
                                               grace and its disks are cloud disks: fenced,
                                               unbound, placed again on another host)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import overload

from control_plane.domain.errors import InvalidTransition


class HostState(enum.StrEnum):
    ENROLLED = "ENROLLED"
    AVAILABLE = "AVAILABLE"
    ALLOCATED = "ALLOCATED"
    CLEANING = "CLEANING"
    MAINTENANCE = "MAINTENANCE"
    UNREACHABLE = "UNREACHABLE"
    DECOMMISSIONED = "DECOMMISSIONED"


class HostEvent(enum.StrEnum):
    PROVIDE = "provide"
    ALLOCATE = "allocate"
    RELEASE = "release"
    CLEAN_DONE = "clean_done"
    CLEAN_FAILED = "clean_failed"
    HEARTBEAT_LOST = "heartbeat_lost"
    HEARTBEAT_RESUMED = "heartbeat_resumed"
    HEARTBEAT_RESUMED_ALLOCATED = "heartbeat_resumed_allocated"
    MAINTAIN = "maintain"
    UNMAINTAIN = "unmaintain"
    DECOMMISSION = "decommission"


_H = HostState
_HE = HostEvent

HOST_TRANSITIONS: Mapping[HostState, Mapping[HostEvent, HostState]] = {
    _H.ENROLLED: {
        _HE.PROVIDE: _H.CLEANING,
        _HE.MAINTAIN: _H.MAINTENANCE,
        _HE.DECOMMISSION: _H.DECOMMISSIONED,
    },
    _H.AVAILABLE: {
        _HE.ALLOCATE: _H.ALLOCATED,
        _HE.HEARTBEAT_LOST: _H.UNREACHABLE,
        _HE.MAINTAIN: _H.MAINTENANCE,
    },
    _H.ALLOCATED: {
        _HE.RELEASE: _H.CLEANING,
        _HE.HEARTBEAT_LOST: _H.UNREACHABLE,
    },
    _H.CLEANING: {
        _HE.CLEAN_DONE: _H.AVAILABLE,
        _HE.CLEAN_FAILED: _H.MAINTENANCE,
        _HE.HEARTBEAT_LOST: _H.UNREACHABLE,
        _HE.MAINTAIN: _H.MAINTENANCE,
    },
    _H.UNREACHABLE: {
        _HE.HEARTBEAT_RESUMED: _H.CLEANING,
        _HE.HEARTBEAT_RESUMED_ALLOCATED: _H.ALLOCATED,
        _HE.RELEASE: _H.UNREACHABLE,
        _HE.MAINTAIN: _H.MAINTENANCE,
    },
    _H.MAINTENANCE: {
        _HE.UNMAINTAIN: _H.CLEANING,
        _HE.DECOMMISSION: _H.DECOMMISSIONED,
    },
    _H.DECOMMISSIONED: {},
}

#: States in which a host may be given to a tenant.
HOST_ALLOCATABLE: frozenset[HostState] = frozenset({_H.AVAILABLE})
#: States a host rests in until someone acts.
HOST_STABLE: frozenset[HostState] = frozenset(
    {_H.ENROLLED, _H.AVAILABLE, _H.ALLOCATED, _H.MAINTENANCE, _H.DECOMMISSIONED}
)
#: States that need attention from an operator or from the liveness controller.
HOST_FAILURE: frozenset[HostState] = frozenset({_H.UNREACHABLE, _H.MAINTENANCE})
#: States in which the host record may be deleted.
HOST_DELETE_ALLOWED: frozenset[HostState] = frozenset(
    {_H.ENROLLED, _H.MAINTENANCE, _H.DECOMMISSIONED}
)
#: States whose liveness is watched (an agent must be heartbeating).
HOST_MONITORED: frozenset[HostState] = frozenset({_H.AVAILABLE, _H.ALLOCATED, _H.CLEANING})


class InstanceState(enum.StrEnum):
    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    PROVISIONING = "PROVISIONING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    REBOOTING = "REBOOTING"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    FAILED = "FAILED"


class InstanceEvent(enum.StrEnum):
    SCHEDULE = "schedule"
    PROVISION = "provision"
    PROVISIONED = "provisioned"
    STARTED = "started"
    STOP = "stop"
    STOPPED = "stopped"
    START = "start"
    REBOOT = "reboot"
    TERMINATE = "terminate"
    TERMINATED = "terminated"
    FAIL = "fail"
    HOST_FAILED = "host_failed"


_I = InstanceState
_IE = InstanceEvent

INSTANCE_TRANSITIONS: Mapping[InstanceState, Mapping[InstanceEvent, InstanceState]] = {
    _I.PENDING: {_IE.SCHEDULE: _I.SCHEDULED, _IE.FAIL: _I.FAILED, _IE.TERMINATE: _I.TERMINATING},
    _I.SCHEDULED: {
        _IE.PROVISION: _I.PROVISIONING,
        _IE.FAIL: _I.FAILED,
        _IE.TERMINATE: _I.TERMINATING,
        _IE.HOST_FAILED: _I.PENDING,
    },
    _I.PROVISIONING: {
        _IE.PROVISIONED: _I.STARTING,
        _IE.FAIL: _I.FAILED,
        _IE.TERMINATE: _I.TERMINATING,
        _IE.HOST_FAILED: _I.PENDING,
    },
    _I.STARTING: {
        _IE.STARTED: _I.RUNNING,
        _IE.FAIL: _I.FAILED,
        _IE.TERMINATE: _I.TERMINATING,
        _IE.HOST_FAILED: _I.PENDING,
    },
    _I.RUNNING: {
        _IE.STOP: _I.STOPPING,
        _IE.STOPPED: _I.STOPPED,
        _IE.REBOOT: _I.REBOOTING,
        _IE.FAIL: _I.FAILED,
        _IE.TERMINATE: _I.TERMINATING,
        _IE.HOST_FAILED: _I.PENDING,
    },
    _I.STOPPING: {_IE.STOPPED: _I.STOPPED, _IE.FAIL: _I.FAILED, _IE.TERMINATE: _I.TERMINATING},
    _I.STOPPED: {_IE.START: _I.STARTING, _IE.TERMINATE: _I.TERMINATING},
    _I.REBOOTING: {
        _IE.STARTED: _I.RUNNING,
        _IE.FAIL: _I.FAILED,
        _IE.TERMINATE: _I.TERMINATING,
        _IE.HOST_FAILED: _I.PENDING,
    },
    _I.TERMINATING: {_IE.TERMINATED: _I.TERMINATED},
    _I.TERMINATED: {},
    _I.FAILED: {_IE.REBOOT: _I.REBOOTING, _IE.TERMINATE: _I.TERMINATING},
}

#: Where each transient state is heading; stable states map to themselves.
INSTANCE_TARGETS: Mapping[InstanceState, InstanceState] = {
    _I.PENDING: _I.RUNNING,
    _I.SCHEDULED: _I.RUNNING,
    _I.PROVISIONING: _I.RUNNING,
    _I.STARTING: _I.RUNNING,
    _I.RUNNING: _I.RUNNING,
    _I.STOPPING: _I.STOPPED,
    _I.STOPPED: _I.STOPPED,
    _I.REBOOTING: _I.RUNNING,
    _I.TERMINATING: _I.TERMINATED,
    _I.TERMINATED: _I.TERMINATED,
    _I.FAILED: _I.FAILED,
}

INSTANCE_STABLE: frozenset[InstanceState] = frozenset(
    {_I.RUNNING, _I.STOPPED, _I.TERMINATED, _I.FAILED}
)
INSTANCE_TRANSIENT: frozenset[InstanceState] = frozenset(set(InstanceState) - INSTANCE_STABLE)
INSTANCE_FAILURE: frozenset[InstanceState] = frozenset({_I.FAILED})
#: States in which the instance record may be deleted (purged).
INSTANCE_DELETE_ALLOWED: frozenset[InstanceState] = frozenset({_I.TERMINATED})
#: States that hold a host (a bound instance in these states keeps its host ALLOCATED).
INSTANCE_HOLDS_HOST: frozenset[InstanceState] = frozenset(
    {
        _I.SCHEDULED,
        _I.PROVISIONING,
        _I.STARTING,
        _I.RUNNING,
        _I.STOPPING,
        _I.STOPPED,
        _I.REBOOTING,
        _I.TERMINATING,
        _I.FAILED,
    }
)
#: States an instance can be moved out of when its host fails (``host_failed``).
INSTANCE_MOVABLE: frozenset[InstanceState] = frozenset(
    {_I.SCHEDULED, _I.PROVISIONING, _I.STARTING, _I.RUNNING, _I.REBOOTING}
)
#: States counted against the tenant's instance quota.
INSTANCE_COUNTS_FOR_QUOTA: frozenset[InstanceState] = frozenset(
    set(InstanceState) - {_I.TERMINATED}
)


def host_transition(state: HostState, event: HostEvent) -> HostState:
    """The host state after *event*, or ``InvalidTransition``."""
    try:
        return HOST_TRANSITIONS[state][event]
    except KeyError:
        raise InvalidTransition("host", str(state), str(event)) from None


def instance_transition(state: InstanceState, event: InstanceEvent) -> InstanceState:
    """The instance state after *event*, or ``InvalidTransition``."""
    try:
        return INSTANCE_TRANSITIONS[state][event]
    except KeyError:
        raise InvalidTransition("instance", str(state), str(event)) from None


@overload
def transition(state: HostState, event: HostEvent) -> HostState: ...
@overload
def transition(state: InstanceState, event: InstanceEvent) -> InstanceState: ...


def transition(
    state: HostState | InstanceState, event: HostEvent | InstanceEvent
) -> HostState | InstanceState:
    """Dispatch to the host or instance table by the type of *state*."""
    if isinstance(state, HostState) and isinstance(event, HostEvent):
        return host_transition(state, event)
    if isinstance(state, InstanceState) and isinstance(event, InstanceEvent):
        return instance_transition(state, event)
    raise InvalidTransition("mixed", str(state), str(event))


def instance_target(state: InstanceState) -> InstanceState:
    return INSTANCE_TARGETS[state]
