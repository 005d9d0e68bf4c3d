"""Instance controller: drives instances through their lifecycle.

Keys are instance names.  Sources: the ``instances/`` watch (every change of
a non-final instance) and the ``agent_reports/`` watch (the instance a
report names).  ``reconcile`` takes the newest version the watch delivered
(as client-go controllers read their informer's cache; used once, then
dropped) or else reads the instance, and acts on its state -- every write is
a CAS on the etag it saw, so a stale view costs a retry (which reads from
etcd), never a wrong decision (the writes that follow the agent and the
terminations go through ``Store.update_many_batched``: concurrent ones
share one txn):

- PENDING: ``Scheduler.place`` (one bind txn), once the instance is older
  than ``pending_grace`` (the API replica that created it places it
  synchronously; racing it would only waste bind transactions).  ``NoCapacity`` sets
  ``Scheduled=False/NoCapacity`` and retries after ``no_capacity_retry``;
  an unknown instance type or placement group FAILs the instance.
- SCHEDULED, PROVISIONING, STARTING, REBOOTING, STOPPING (and RUNNING or
  STOPPED, for a FAILED report): follow the agent.
  The latest report of the instance's host is applied only if it names this
  instance and is at least as new as ``Instance.generation``;
  ``domain.agent.events_for_report`` gives the events to apply.  Nothing
  else moves an instance forward: a state is written because an agent
  observed it.
- TERMINATING: ONE txn sets the instance TERMINATED (releasing its quota
  slot), releases the host to CLEANING (``assigned_instance`` cleared,
  ``cleaning_epoch`` bumped), drops the instance from its placement
  group and detaches its volumes and network interfaces (both sides: the
  instance's lists are emptied, each volume's ``attached_to`` / interface's
  ``instance`` that still names it is cleared), so the tenant can reuse or
  delete them.  The host is never AVAILABLE again before its wipe is reported.
- TERMINATED with attachments left (an instance terminated by an older
  replica, or a race): the same detach, alone -- level-triggered: the watch
  and the resync enqueue every TERMINATED instance whose lists are not
  empty, and a second pass finds nothing to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Coroutine, Iterable
from typing import Any

from control_plane.controllers.base import Controller
from control_plane.controllers.config import ControllerConfig
from control_plane.controllers.outcome import DONE, Outcome, Transient
from control_plane.domain.agent import AgentReport, events_for_report
from control_plane.domain.compute import Instance
from control_plane.domain.conditions import ConditionStatus, ConditionType, set_condition
from control_plane.domain.errors import Aborted, NoCapacity, NotFound
from control_plane.domain.host import Host
from control_plane.domain.lifecycle import (
    INSTANCE_STABLE,
    HostEvent,
    HostState,
    InstanceEvent,
    InstanceState,
)
from control_plane.domain.network import NetworkInterface
from control_plane.domain.placement import PlacementGroup
from control_plane.domain.transitions import apply_host_event, apply_instance_event
from control_plane.domain.volume import Volume
from control_plane.scheduler import Scheduler
from control_plane.store import RecordChanged, Store

_I = InstanceState

#: States where the controller has work to do (RUNNING/STOPPED/FAILED wait for users).
ACTIVE_STATES = frozenset(set(InstanceState) - INSTANCE_STABLE)

_Record = Instance | Host | PlacementGroup | Volume | NetworkInterface


class InstanceController(Controller):
    name = "instances"

    def __init__(self, store: Store, config: ControllerConfig, scheduler: Scheduler) -> None:
        super().__init__(store, config)
        self.scheduler = scheduler
        #: the newest version of each active instance the watch delivered
        #: (an informer cache): a reconcile acts on it instead of a read; the
        #: controller's own writes replace it, a lost CAS drops it
        self._observed: dict[str, Instance] = {}
        #: the newest watched report of each host (host id -> report)
        #: (None: read once and found absent; a later report comes by the watch)
        self._reports: dict[str, AgentReport | None] = {}

    async def resync_keys(self) -> Iterable[str]:
        instances, _ = await self.store.list_all(Instance)
        return [i.name for i in instances if i.state in ACTIVE_STATES or _holds_attachments(i)]

    def sources(self, start_revision: int) -> list[Coroutine[Any, Any, None]]:
        return [self._watch_instances(start_revision), self._watch_reports(start_revision)]

    async def _watch_instances(self, start: int) -> None:
        async with contextlib.aclosing(self.store.watch(Instance, start_revision=start)) as evs:
            async for ev in evs:
                inst = ev.obj
                if inst is not None and _holds_attachments(inst):
                    self._observed[ev.name] = inst
                    self.queue.add(ev.name)
                    continue
                if inst is None or inst.state not in ACTIVE_STATES:
                    self._observed.pop(ev.name, None)
                    continue
                self._observed[ev.name] = inst
                wait = self._grace_left(inst)
                if wait > 0:
                    self.queue.add_after(ev.name, wait)  # its API replica is placing it
                else:
                    self.queue.add(ev.name)

    def _grace_left(self, inst: Instance) -> float:
        if inst.state != _I.PENDING:
            return 0.0
        return inst.create_time + self.config.pending_grace - self.store.clock()

    async def _watch_reports(self, start: int) -> None:
        async with contextlib.aclosing(self.store.reports.watch(start_revision=start)) as evs:
            async for ev in evs:
                host = ev.name.rsplit("/", 1)[-1]
                if ev.obj is None:
                    self._reports.pop(host, None)
                    continue
                prev = self._reports.get(host)
                self._reports[host] = ev.obj
                # only news about the instance wakes it (not a wipe report)
                if ev.obj.instance and (
                    prev is None
                    or (prev.instance, prev.instance_phase, prev.generation, prev.message)
                    != (ev.obj.instance, ev.obj.instance_phase, ev.obj.generation, ev.obj.message)
                ):
                    self.queue.add(ev.obj.instance)

    async def reconcile(self, key: str) -> Outcome:
        inst = self._observed.get(key)
        if inst is None:
            try:
                inst = await self.store.get(Instance, key)
            except NotFound:
                return DONE
        try:
            if inst.state == _I.PENDING:
                return await self._schedule(inst)
            if inst.state == _I.TERMINATING:
                return await self._terminate(inst)
            if _holds_attachments(inst):
                objs, read = await self._detach_all(inst)
                await self.store.update_many(objs, previous=[inst, *read])
                return DONE
            if inst.state in ACTIVE_STATES or inst.state in (_I.RUNNING, _I.STOPPED):
                return await self._follow_agent(inst)
        except Aborted:
            self._observed.pop(key, None)  # stale: the retry reads from etcd
            return Transient()  # lost a race: re-read and try again after a short backoff
        return DONE

    async def _schedule(self, inst: Instance) -> Outcome:
        now = self.store.clock()
        wait = self._grace_left(inst)
        if wait > 0:
            return Transient(delay=wait, reason="the creating API replica is placing it")
        try:
            await self.scheduler.place(inst)
        except NoCapacity as exc:
            conds = set_condition(
                inst.conditions,
                type_=ConditionType.SCHEDULED,
                status=ConditionStatus.FALSE,
                reason="NoCapacity",
                message=str(exc),
                now=now,
            )
            if conds != inst.conditions:
                await self.store.update(dataclasses.replace(inst, conditions=conds))
            return Transient(delay=self.config.no_capacity_retry, reason="NoCapacity")
        except NotFound as exc:
            failed = apply_instance_event(inst, InstanceEvent.FAIL, reason=str(exc))
            await self.store.update(failed)
        return DONE

    async def _follow_agent(self, inst: Instance) -> Outcome:
        if not inst.host:
            return DONE
        host_id = inst.host.rsplit("/", 1)[-1]
        report = await self._report(host_id)
        if report is None or report.instance != inst.name or report.generation < inst.generation:
            return DONE  # wait: the next report requeues this instance
        events = events_for_report(inst.state, report.instance_phase)
        if not events:
            return DONE
        new = inst
        for event in events:
            new = apply_instance_event(new, event, reason=report.message)
        written = await self.store.update_batched(new)
        if written.state in ACTIVE_STATES and self._observed.get(inst.name) is inst:
            self._observed[inst.name] = written  # the watch brings the same, later
        return DONE

    async def _report(self, host_id: str) -> AgentReport | None:
        """The host's newest report: watched, or read once for a host that
        has not reported since the watch started."""
        if host_id in self._reports:
            return self._reports[host_id]
        report = await self.store.reports.get(host_id)
        # the watch may have delivered a newer one meanwhile
        return self._reports.setdefault(host_id, report)

    async def _terminate(self, inst: Instance, *, fresh: bool = False) -> Outcome:
        now = self.store.clock()
        done = dataclasses.replace(apply_instance_event(inst, InstanceEvent.TERMINATED), host="")
        objs, read = await self._detach_all(done)
        if inst.host:
            # The cached host saves a read, but only if it already shows this
            # binding (a cache that has not seen the bind yet must not make us
            # skip the release); if it is stale otherwise, the txn says so and
            # we retry once with the stored host.
            host = None if fresh else self.scheduler.cache.get(inst.host.rsplit("/", 1)[-1])
            if host is not None and host.assigned_instance != inst.name:
                host = None
            if host is None:
                try:
                    host = await self.store.get(Host, inst.host)
                except NotFound:
                    host = None
            if host is not None and host.assigned_instance == inst.name:
                released = host
                if host.state in (HostState.ALLOCATED, HostState.UNREACHABLE):
                    released = apply_host_event(host, HostEvent.RELEASE, now=now)
                objs.append(dataclasses.replace(released, assigned_instance=""))
        if inst.placement_group:
            with contextlib.suppress(NotFound):
                group = await self.store.get(PlacementGroup, inst.placement_group)
                if any(p.instance == inst.name for p in group.placements):
                    objs.append(group.without_member(inst.name))
        try:
            # the records as read: the store computes the quota release from
            # them instead of reading them again; concurrent terminations
            # share a txn
            await self.store.update_many_batched(objs, previous=[inst, *read])
        except RecordChanged as exc:
            if fresh or exc.name != inst.host:
                raise
            return await self._terminate(inst, fresh=True)
        self.store.consoles.delete_later(inst.name)  # batched with others'
        return DONE

    async def _detach_all(self, inst: Instance) -> tuple[list[_Record], list[_Record]]:
        """*inst* with no volumes or network interfaces, followed by each of
        them that still names it, detached (all to be written in one txn);
        and the records as read (``Store.update_many(previous=...)``)."""
        if not _holds_attachments(inst):
            return [inst], []
        out: list[_Record] = [dataclasses.replace(inst, volumes=(), network_interfaces=())]
        read: list[_Record] = []
        for vol in await self.store.get_many(Volume, inst.volumes):
            if vol is not None and vol.attached_to == inst.name:
                out.append(dataclasses.replace(vol, attached_to=""))
                read.append(vol)
        for nic in await self.store.get_many(NetworkInterface, inst.network_interfaces):
            if nic is not None and nic.instance == inst.name:
                if nic.delete_on_termination:  # the primary interface goes with it
                    with contextlib.suppress(NotFound):
                        await self.store.delete(NetworkInterface, nic.name, etag=nic.etag)
                else:
                    out.append(dataclasses.replace(nic, instance=""))
        return out, read


def _holds_attachments(inst: Instance) -> bool:
    """A TERMINATED instance that still lists volumes or network interfaces."""
    return inst.state == _I.TERMINATED and bool(inst.volumes or inst.network_interfaces)
