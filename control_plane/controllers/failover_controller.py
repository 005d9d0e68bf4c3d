"""Failover controller: an instance leaves a host that stayed unreachable.

Runs only with ``[storage] backend = "rbd"``.  Keys are host ids.
Sources: the ``hosts/`` watch (a host turning UNREACHABLE with an
instance) and the resync (every such host).  ``reconcile`` re-reads the
host and its instance and asks ``domain.failover.decide``:

- ``Wait``: requeue when the grace runs out;
- ``Stay``: the instance's ``Moved`` condition says False and why (it
  waits for its host, as before);
- ``Move``: (1) fence: every client holding the lock of one of the
  instance's images is blocklisted (``CephAdmin.fence``), so the old card
  can never write again, whatever it is doing; a cluster that does not
  answer leaves everything as it is (``Moved=False/CephUnavailable``) and
  retries; (2) in ONE transaction: the instance ``host_failed`` -> PENDING,
  unbound, pinned to the old host's zone, ``Moved=True/HostFailed`` with
  the old host and the time; the host released (it stays UNREACHABLE,
  with no instance, so a returning agent finds nothing to resume, tears
  the server down, and the host goes through CLEANING).  The instance
  controller then places it like any PENDING instance (same instance
  type, so the same host class); with no free host it says
  ``Scheduled=False/NoCapacity`` and keeps trying.  The new host's agent
  finds the boot disk in the pool and keeps it (``ensure_clone``), the NIC
  records (address, MAC) are the same, VXLAN peers are recomputed from
  where instances run, and the user data is the instance's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

from control_plane import metrics
from control_plane.controllers.base import Controller
from control_plane.controllers.config import ControllerConfig
from control_plane.controllers.outcome import DONE, Outcome, Transient
from control_plane.domain.compute import Instance
from control_plane.domain.conditions import ConditionStatus, ConditionType, set_condition
from control_plane.domain.errors import Aborted, NotFound
from control_plane.domain.failover import Move, Stay, Wait, decide, disk_images
from control_plane.domain.host import Host
from control_plane.domain.lifecycle import HostEvent, HostState, InstanceEvent
from control_plane.domain.transitions import apply_host_event, apply_instance_event
from control_plane.storage import CephAdmin, CephError
from control_plane.store import Store

log = logging.getLogger(__name__)

#: seconds between attempts while the cluster does not answer the fence
RETRY = 2.0


class FailoverController(Controller):
    name = "failover"

    def __init__(self, store: Store, config: ControllerConfig, admin: CephAdmin) -> None:
        super().__init__(store, config)
        self.admin = admin

    async def resync_keys(self) -> Iterable[str]:
        hosts, _ = await self.store.list_all(Host)
        return [h.id for h in hosts if h.state == HostState.UNREACHABLE and h.assigned_instance]

    def sources(self, start_revision: int) -> list[Coroutine[Any, Any, None]]:
        return [self._watch_hosts(start_revision)]

    async def _watch_hosts(self, start: int) -> None:
        async with contextlib.aclosing(self.store.watch(Host, start_revision=start)) as evs:
            async for ev in evs:
                host = ev.obj
                if host is not None and host.state == HostState.UNREACHABLE:
                    self.queue.add(host.id)

    async def reconcile(self, key: str) -> Outcome:
        try:
            host = await self.store.get(Host, f"hosts/{key}")
        except NotFound:
            return DONE
        inst: Instance | None = None
        if host.assigned_instance:
            with contextlib.suppress(NotFound):
                inst = await self.store.get(Instance, host.assigned_instance)
        now = self.store.clock()
        decision = decide(host, inst, storage=self.config.storage, now=now)
        if decision is None:
            return DONE
        assert inst is not None
        if isinstance(decision, Wait):
            return Transient(delay=max(decision.delay, 0.05), reason="failover grace")
        if isinstance(decision, Stay):
            await self._moved(inst, ConditionStatus.FALSE, "NotMovable", decision.reason)
            return DONE
        assert isinstance(decision, Move)
        images = disk_images(inst)
        try:
            fenced = await asyncio.to_thread(self.admin.fence, images)
        except CephError as exc:
            await self._moved(inst, ConditionStatus.FALSE, "CephUnavailable", f"fencing: {exc}")
            return Transient(delay=RETRY, reason=str(exc))
        log.warning(
            "failover: %s unreachable; fenced %s out of %s; moving %s",
            host.name, fenced or "nobody", ", ".join(images), inst.name,
        )  # fmt: skip
        moved = apply_instance_event(inst, InstanceEvent.HOST_FAILED)
        conds = set_condition(
            moved.conditions,
            type_=ConditionType.MOVED,
            status=ConditionStatus.TRUE,
            reason="HostFailed",
            message=(
                f"{host.name} unreachable for {self.config.storage.failover_grace:g}s: "
                f"restarted on another host of class {host.host_class}"
                f"{' in zone ' + host.zone if host.zone else ''}"
            ),
            now=now,
        )
        for type_ in (ConditionType.HOST_REACHABLE, ConditionType.IMPAIRED):
            # about the host it left: the new host's agent reports for itself
            conds = tuple(c for c in conds if c.type != type_)
        moved = dataclasses.replace(moved, host="", zone=inst.zone or host.zone, conditions=conds)
        released = dataclasses.replace(
            apply_host_event(host, HostEvent.RELEASE, now=now), assigned_instance=""
        )
        try:
            objs: list[Host | Instance] = [released, moved]
            await self.store.update_many(objs)
        except Aborted:
            return Transient()
        metrics.FAILOVERS.inc()
        metrics.FENCED_CLIENTS.inc(len(fenced))
        return DONE

    async def _moved(
        self, inst: Instance, status: ConditionStatus, reason: str, message: str
    ) -> None:
        conds = set_condition(
            inst.conditions,
            type_=ConditionType.MOVED,
            status=status,
            reason=reason,
            message=message,
            now=self.store.clock(),
        )
        if conds != inst.conditions:
            with contextlib.suppress(Aborted, NotFound):
                await self.store.update(dataclasses.replace(inst, conditions=conds))
