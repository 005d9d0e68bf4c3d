"""Status conditions (Kubernetes style) and the one helper that changes them.

A condition is ``(type, status, reason, message, last_transition_time)``.
``set_condition`` returns a new tuple: it replaces the condition of the same
type, and keeps ``last_transition_time`` unless ``status`` flips, so a
reconciler can call it on every pass without churning timestamps.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(enum.StrEnum):
    """Well-known condition types (others are allowed, these are what controllers set)."""

    HOST_REACHABLE = "HostReachable"
    IMPAIRED = "Impaired"
    SCHEDULED = "Scheduled"
    READY = "Ready"
    CLEANED = "Cleaned"
    RECONCILE_FAILED = "ReconcileFailed"
    #: a volume's disk exists in the storage back-end at its size
    PROVISIONED = "Provisioned"
    #: an instance was restarted on another host (host failure), or waits to be
    MOVED = "Moved"


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    last_transition_time: float = 0.0


def find_condition(conditions: tuple[Condition, ...], type_: str) -> Condition | None:
    for cond in conditions:
        if cond.type == type_:
            return cond
    return None


def condition_is(conditions: tuple[Condition, ...], type_: str, status: ConditionStatus) -> bool:
    cond = find_condition(conditions, type_)
    return cond is not None and cond.status == status


def set_condition(
    conditions: tuple[Condition, ...],
    *,
    type_: str,
    status: ConditionStatus,
    reason: str = "",
    message: str = "",
    now: float,
) -> tuple[Condition, ...]:
    """Return *conditions* with the condition *type_* set (added or replaced).

    ``last_transition_time`` only moves when the status changes.
    """
    old = find_condition(conditions, type_)
    if old is not None and old.status == status:
        if old.reason == reason and old.message == message:
            return conditions
        new = dataclasses.replace(old, reason=reason, message=message)
    else:
        new = Condition(type_, status, reason, message, now)
    if old is None:
        return (*conditions, new)
    return tuple(new if c.type == type_ else c for c in conditions)


def remove_condition(conditions: tuple[Condition, ...], type_: str) -> tuple[Condition, ...]:
    return tuple(c for c in conditions if c.type != type_)
