"""Liveness controller: silent hosts become UNREACHABLE, and come back.

Keys are host ids.  Sources: the ``heartbeats/`` watch (a session starting
or a lease expiring) and, via resync, a comparison of all hosts with the
live heartbeat keys.  ``reconcile`` re-reads the host and whether its
heartbeat key exists (the lease's expiry is the only definition of
"silent"), then, in ONE transaction with the bound instance:

- alive: stamp ``last_heartbeat`` (which makes the host *monitored*), set
  ``HostReachable=True``; an UNREACHABLE host returns to ALLOCATED (it still
  has an instance) or to CLEANING (it has none: wipe before reuse); its
  instance gets ``HostReachable=True`` and ``Impaired=False``;
- silent, monitored, in AVAILABLE/ALLOCATED/CLEANING: -> UNREACHABLE with
  ``HostReachable=False``; its instance gets ``HostReachable=False`` and
  ``Impaired=True`` (reason ``HostUnreachable``).

Hosts that never heartbeated (simulated, agentless) are left alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Coroutine, Iterable
from typing import Any

from control_plane.controllers.base import Controller
from control_plane.controllers.outcome import DONE, Outcome, Transient
from control_plane.domain.compute import Instance
from control_plane.domain.conditions import (
    Condition,
    ConditionStatus,
    ConditionType,
    condition_is,
    set_condition,
)
from control_plane.domain.errors import Aborted, NotFound
from control_plane.domain.host import Host
from control_plane.domain.lifecycle import HOST_MONITORED, HostEvent, HostState
from control_plane.domain.transitions import apply_host_event

_T = ConditionStatus.TRUE
_F = ConditionStatus.FALSE


class LivenessController(Controller):
    name = "liveness"

    async def resync_keys(self) -> Iterable[str]:
        hosts, _ = await self.store.list_all(Host)
        live, _ = await self.store.liveness.live_hosts()
        return [h.id for h in hosts if _mismatch(h, h.id in live)]

    def sources(self, start_revision: int) -> list[Coroutine[Any, Any, None]]:
        return [self._watch_heartbeats(start_revision)]

    async def _watch_heartbeats(self, start: int) -> None:
        async with contextlib.aclosing(self.store.liveness.watch(start_revision=start)) as evs:
            async for ev in evs:
                self.queue.add(ev.host)

    async def reconcile(self, key: str) -> Outcome:
        try:
            host = await self.store.get(Host, f"hosts/{key}")
        except NotFound:
            return DONE
        alive = await self.store.liveness.is_alive(key)
        if not _mismatch(host, alive):
            return DONE
        now = self.store.clock()
        new_host = _host_after(host, alive, now)
        objs: list[Host | Instance] = [new_host]
        if host.assigned_instance:
            with contextlib.suppress(NotFound):
                inst = await self.store.get(Instance, host.assigned_instance)
                conds = _instance_conditions(inst.conditions, alive, host.name, now)
                if conds != inst.conditions:
                    objs.append(dataclasses.replace(inst, conditions=conds))
        try:
            await self.store.update_many(objs)
        except Aborted:
            return Transient()
        return DONE


def _mismatch(host: Host, alive: bool) -> bool:
    """Does the host record disagree with its heartbeat lease?"""
    reachable = condition_is(host.conditions, ConditionType.HOST_REACHABLE, _T)
    if alive:
        return not host.monitored or host.state == HostState.UNREACHABLE or not reachable
    if not host.monitored:
        return False
    return host.state in HOST_MONITORED or reachable


def _host_after(host: Host, alive: bool, now: float) -> Host:
    new = host
    if alive:
        if host.state == HostState.UNREACHABLE:
            event = (
                HostEvent.HEARTBEAT_RESUMED_ALLOCATED
                if host.assigned_instance
                else HostEvent.HEARTBEAT_RESUMED
            )
            new = apply_host_event(host, event, now=now)
        status, reason, message = _T, "Heartbeating", "agent heartbeats resumed"
        new = dataclasses.replace(new, last_heartbeat=now)
    else:
        if host.state in HOST_MONITORED:
            new = apply_host_event(host, HostEvent.HEARTBEAT_LOST, now=now)
        status, reason, message = _F, "HeartbeatLeaseExpired", "no heartbeat within the lease TTL"
    conds = set_condition(
        new.conditions,
        type_=ConditionType.HOST_REACHABLE,
        status=status,
        reason=reason,
        message=message,
        now=now,
    )
    return dataclasses.replace(new, conditions=conds)


def _instance_conditions(
    conds: tuple[Condition, ...], alive: bool, host: str, now: float
) -> tuple[Condition, ...]:
    reach, impaired = (_T, _F) if alive else (_F, _T)
    reason = "HostReachable" if alive else "HostUnreachable"
    conds = set_condition(
        conds,
        type_=ConditionType.HOST_REACHABLE,
        status=reach,
        reason=reason,
        message=host,
        now=now,
    )
    return set_condition(
        conds, type_=ConditionType.IMPAIRED, status=impaired, reason=reason, message=host, now=now
    )
