"""Host controller: cleaning, maintenance, and orphan allocations.

Keys are host ids.  Sources: the ``hosts/`` watch and the
``agent_reports/`` watch.  ``reconcile`` takes the newest watched version
of the host or reads it, and, with a CAS on its etag (the agent's
report is the newest watched one; read only for a host that has not
reported since the controller started):

- CLEANING (entered at the agent's first Register, after a tenant, out of
  maintenance or an outage; each entry is a new epoch): completes when the
  agent's report has ``wiped_epoch >= cleaning_epoch`` (-> AVAILABLE,
  ``Cleaned=True``): only the agent's wipe report ends a cleaning, and
  it is the only way into AVAILABLE.  A host flagged ``maintenance`` goes
  to MAINTENANCE instead, and comes back through a new CLEANING epoch (a
  report for the interrupted one does not count).
- ENROLLED / AVAILABLE with ``maintenance`` set: -> MAINTENANCE.
- MAINTENANCE with ``maintenance`` cleared: -> CLEANING (always re-wiped).
- ALLOCATED whose instance is gone, TERMINATED or bound elsewhere (found
  by the periodic resync; binding and release are single transactions, so
  this is a safety net against buggy writers): -> CLEANING.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Coroutine, Iterable
from typing import Any

from control_plane.controllers.base import Controller
from control_plane.controllers.config import ControllerConfig
from control_plane.controllers.outcome import DONE, Outcome, Transient
from control_plane.domain.agent import AgentReport
from control_plane.domain.compute import Instance
from control_plane.domain.conditions import ConditionStatus, ConditionType, set_condition
from control_plane.domain.errors import Aborted, NotFound
from control_plane.domain.host import Host
from control_plane.domain.lifecycle import HostEvent, HostState, InstanceState
from control_plane.domain.transitions import apply_host_event
from control_plane.store import Store

_H = HostState


class HostController(Controller):
    name = "hosts"

    def __init__(self, store: Store, config: ControllerConfig) -> None:
        super().__init__(store, config)
        #: newest watched version of hosts needing work (like the instance
        #: controller's informer cache: writes are CAS on its etag, a lost
        #: CAS drops it, the watch replaces it after our own writes)
        self._observed: dict[str, Host] = {}
        #: the newest watched report of each host (host id -> report)
        #: (None: read once and found absent; a later report comes by the watch)
        self._reports: dict[str, AgentReport | None] = {}

    async def resync_keys(self) -> Iterable[str]:
        hosts, _ = await self.store.list_all(Host)
        instances, _ = await self.store.list_all(Instance)
        bound = {i.name: i for i in instances}
        return [h.id for h in hosts if _needs_work(h) or _orphan(h, bound)]

    def sources(self, start_revision: int) -> list[Coroutine[Any, Any, None]]:
        return [self._watch_hosts(start_revision), self._watch_reports(start_revision)]

    async def _watch_hosts(self, start: int) -> None:
        async with contextlib.aclosing(self.store.watch(Host, start_revision=start)) as evs:
            async for ev in evs:
                host = ev.obj
                if host is None or not _needs_work(host):
                    self._observed.pop(ev.name.rsplit("/", 1)[-1], None)
                    continue
                self._observed[host.id] = host
                self.queue.add(host.id)

    async def _watch_reports(self, start: int) -> None:
        async with contextlib.aclosing(self.store.reports.watch(start_revision=start)) as evs:
            async for ev in evs:
                host = ev.name.rsplit("/", 1)[-1]
                if ev.obj is None:
                    self._reports.pop(host, None)
                    continue
                prev = self._reports.get(host)
                self._reports[host] = ev.obj
                # only a new wipe epoch wakes the host (not an instance phase)
                if ev.obj.wiped_epoch and (prev is None or prev.wiped_epoch != ev.obj.wiped_epoch):
                    self.queue.add(ev.obj.host)

    async def reconcile(self, key: str) -> Outcome:
        host = self._observed.get(key)
        if host is None:
            try:
                host = await self.store.get(Host, f"hosts/{key}")
            except NotFound:
                return DONE
        try:
            return await self._converge(host)
        except Aborted:
            self._observed.pop(key, None)  # stale: the retry reads from etcd
            return Transient()

    async def _converge(self, host: Host) -> Outcome:
        now = self.store.clock()
        if host.state == _H.CLEANING:
            return await self._cleaning(host, now)
        if host.state in (_H.ENROLLED, _H.AVAILABLE) and host.maintenance:
            await self.store.update(apply_host_event(host, HostEvent.MAINTAIN, now=now))
        elif host.state == _H.MAINTENANCE and not host.maintenance:
            await self.store.update(apply_host_event(host, HostEvent.UNMAINTAIN, now=now))
        elif host.state == _H.ALLOCATED and await self._orphaned(host):
            released = apply_host_event(host, HostEvent.RELEASE, now=now)
            await self.store.update(dataclasses.replace(released, assigned_instance=""))
        return DONE

    async def _cleaning(self, host: Host, now: float) -> Outcome:
        if host.maintenance:
            await self.store.update(apply_host_event(host, HostEvent.MAINTAIN, now=now))
            return DONE
        if host.id in self._reports:
            report = self._reports[host.id]
        else:  # not reported since the watch started: read once
            report = self._reports.setdefault(host.id, await self.store.reports.get(host.id))
        if report is None or report.wiped_epoch < host.cleaning_epoch:
            return DONE  # the agent's wipe report requeues the host
        done = apply_host_event(host, HostEvent.CLEAN_DONE, now=now)
        conds = set_condition(
            done.conditions,
            type_=ConditionType.CLEANED,
            status=ConditionStatus.TRUE,
            reason="WipeCompleted",
            message=f"epoch {host.cleaning_epoch}",
            now=now,
        )
        # many hosts finish cleaning at once: their writes share txns
        await self.store.update_batched(dataclasses.replace(done, conditions=conds))
        return DONE

    async def _orphaned(self, host: Host) -> bool:
        if not host.assigned_instance:
            return True
        try:
            inst = await self.store.get(Instance, host.assigned_instance)
        except NotFound:
            return True
        return inst.host != host.name or inst.state == InstanceState.TERMINATED


def _orphan(host: Host, instances: dict[str, Instance]) -> bool:
    """ALLOCATED, but its instance is gone, finished, or bound elsewhere."""
    if host.state != _H.ALLOCATED or not host.assigned_instance:
        return False
    inst = instances.get(host.assigned_instance)
    return inst is None or inst.host != host.name or inst.state == InstanceState.TERMINATED


def _needs_work(host: Host) -> bool:
    if host.state == _H.CLEANING:
        return True
    if host.state in (_H.ENROLLED, _H.AVAILABLE) and host.maintenance:
        return True
    if host.state == _H.MAINTENANCE and not host.maintenance:
        return True
    return host.state == _H.ALLOCATED and not host.assigned_instance
