"""Storage controller: the store says which disks exist; the cluster follows.

Runs only with ``[storage] backend = "rbd"``.  Keys are of two kinds:

- a volume's name (``tenants/T/volumes/V``): the volume record exists ->
  its image ``vol.T.V`` exists with at least its size (created or grown),
  and the volume's ``Provisioned`` condition says True; the record is gone
  -> the image is deleted.  While the cluster does not answer the
  condition says False with reason ``CephUnavailable`` and the key is
  retried every ``RETRY`` seconds, so the volume completes by itself when
  Ceph returns; creation is idempotent, so nothing is made twice.
- ``rbd:<image>``, an image in the pool found by the resync whose owner is
  gone: a boot disk ``boot.T.I`` whose instance is TERMINATED or deleted,
  a volume image ``vol.T.V`` whose volume is deleted -> deleted.

Sources: the ``volumes/`` watch, and the ``instances/`` watch for
instances reaching TERMINATED or deleted (their boot disk).  The resync
lists volumes and the pool's images, so a deletion missed while this
replica did not lead is still done.  Ceph calls block; they run in a
thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

from control_plane.controllers.base import Controller
from control_plane.controllers.config import ControllerConfig
from control_plane.controllers.outcome import DONE, Outcome, Transient
from control_plane.domain.compute import Instance
from control_plane.domain.conditions import ConditionStatus, ConditionType, set_condition
from control_plane.domain.errors import Aborted, InvalidArgument, NotFound
from control_plane.domain.lifecycle import InstanceState
from control_plane.domain.names import instance_name, parse_name, volume_name
from control_plane.domain.storage import volume_image
from control_plane.domain.volume import Volume
from control_plane.storage import CephAdmin, CephError, CephUnavailable
from control_plane.store import Store

log = logging.getLogger(__name__)

GIB = 1 << 30
#: seconds between attempts while the cluster does not answer
RETRY = 2.0
_IMAGE = "rbd:"


class StorageController(Controller):
    name = "storage"

    def __init__(self, store: Store, config: ControllerConfig, admin: CephAdmin) -> None:
        super().__init__(store, config)
        self.admin = admin

    async def resync_keys(self) -> Iterable[str]:
        volumes, _ = await self.store.list_all(Volume)
        keys = [v.name for v in volumes]
        try:
            images = await asyncio.to_thread(self.admin.images)
        except CephError as exc:
            log.warning("storage: cannot list the pool: %s", exc)
            return keys
        instances, _ = await self.store.list_all(Instance)
        live = {i.name for i in instances if i.state != InstanceState.TERMINATED}
        have = set(keys)
        return keys + [f"{_IMAGE}{n}" for n in images if _orphan(n, live, have)]

    def sources(self, start_revision: int) -> list[Coroutine[Any, Any, None]]:
        return [self._watch_volumes(start_revision), self._watch_instances(start_revision)]

    async def _watch_volumes(self, start: int) -> None:
        async with contextlib.aclosing(self.store.watch(Volume, start_revision=start)) as evs:
            async for ev in evs:
                self.queue.add(ev.name)

    async def _watch_instances(self, start: int) -> None:
        async with contextlib.aclosing(self.store.watch(Instance, start_revision=start)) as evs:
            async for ev in evs:
                if ev.deleted or (ev.obj is not None and ev.obj.state == InstanceState.TERMINATED):
                    with contextlib.suppress(InvalidArgument):
                        tenant, iid = parse_name(ev.name).ids
                        self.queue.add(f"{_IMAGE}boot.{tenant}.{iid}")

    async def reconcile(self, key: str) -> Outcome:
        if key.startswith(_IMAGE):
            return await self._orphan_image(key.removeprefix(_IMAGE))
        return await self._volume(key)

    async def _volume(self, name: str) -> Outcome:
        try:
            vol = await self.store.get(Volume, name)
        except NotFound:
            tenant, vid = parse_name(name).ids
            return await self._call(self.admin.remove, volume_image(tenant, vid))
        try:
            await asyncio.to_thread(
                self.admin.ensure_volume, volume_image(vol.tenant, vol.id), vol.size_gib * GIB
            )
        except CephError as exc:
            reason = "CephUnavailable" if isinstance(exc, CephUnavailable) else "CephError"
            await self._condition(vol, ConditionStatus.FALSE, reason, str(exc))
            return Transient(delay=RETRY, reason=str(exc))
        await self._condition(vol, ConditionStatus.TRUE, "Created", f"{vol.size_gib} GiB")
        return DONE

    async def _condition(
        self, vol: Volume, status: ConditionStatus, reason: str, message: str
    ) -> None:
        conds = set_condition(
            vol.conditions,
            type_=ConditionType.PROVISIONED,
            status=status,
            reason=reason,
            message=message,
            now=self.store.clock(),
        )
        if conds != vol.conditions:
            with contextlib.suppress(Aborted, NotFound):  # moved meanwhile: the watch requeues
                await self.store.update(dataclasses.replace(vol, conditions=conds))

    async def _orphan_image(self, image: str) -> Outcome:
        owner = _owner(image)
        if owner is None:
            return DONE  # not ours (parents, imports in progress): never touched
        kind, name = owner
        try:
            if kind == "volume":
                await self.store.get(Volume, name)
                return DONE
            inst = await self.store.get(Instance, name)
            if inst.state != InstanceState.TERMINATED:
                return DONE
        except NotFound:
            pass
        return await self._call(self.admin.remove, image)

    async def _call(self, fn: Any, *args: Any) -> Outcome:
        try:
            await asyncio.to_thread(fn, *args)
        except CephError as exc:
            return Transient(delay=RETRY, reason=str(exc))
        return DONE


def _owner(image: str) -> tuple[str, str] | None:
    """("volume" | "instance", record name) an image belongs to, None if not ours."""
    kind, _, rest = image.partition(".")
    tenant, _, ident = rest.partition(".")
    if not tenant or not ident or "." in ident:
        return None
    try:
        if kind == "vol":
            return "volume", volume_name(tenant, ident)
        if kind == "boot":
            return "instance", instance_name(tenant, ident)
    except InvalidArgument:
        return None
    return None


def _orphan(image: str, live_instances: set[str], volumes: set[str]) -> bool:
    owner = _owner(image)
    if owner is None:
        return False
    kind, name = owner
    return name not in (volumes if kind == "volume" else live_instances)
