"""Attach and detach: a volume or network interface and its instance
change in ONE transaction compared on both etags, so the two records never
disagree about an attachment.  A concurrent change of the instance (a
controller moving it on) re-runs the read-check-write (``races``); a change
of the record the caller gave an etag for surfaces as ``Aborted``.

Termination frees data volumes: a volume whose ``attached_to`` names a
TERMINATED (or vanished) instance is shown, and treated, as detached.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from control_plane.domain.compute import Instance
from control_plane.domain.errors import Aborted, FailedPrecondition, NotFound
from control_plane.domain.lifecycle import InstanceState
from control_plane.domain.network import NetworkInterface
from control_plane.domain.validation import MAX_VOLUMES_PER_INSTANCE
from control_plane.domain.volume import Volume
from control_plane.services.races import ref, retry_races
from control_plane.store import Store

_NOT_ATTACHABLE = frozenset(
    {InstanceState.TERMINATING, InstanceState.TERMINATED, InstanceState.FAILED}
)


def check_etag(name: str, want: str, have: str) -> None:
    """``Aborted`` unless *want* (the caller's etag; empty: any) is *have*."""
    if want and want != have:
        raise Aborted(f"{name}: etag {want} is stale (now {have})")


class Attachments:
    def __init__(self, store: Store) -> None:
        self._store = store

    # -- volumes ------------------------------------------------------------------------

    async def volume(self, name: str, *, etag: str = "") -> Volume:
        """The volume, compared on *etag*, with an attachment to a TERMINATED
        (or vanished) instance shown as released."""
        vol = await self._store.get(Volume, name)
        check_etag(name, etag, vol.etag)
        if vol.attached_to and not await self._holds(vol.attached_to):
            vol = dataclasses.replace(vol, attached_to="")
        return vol

    async def _holds(self, instance: str) -> bool:
        try:
            inst = await self._store.get(Instance, instance)
        except NotFound:
            return False
        return inst.state != InstanceState.TERMINATED

    async def attach_volume(self, name: str, instance: str, *, etag: str = "") -> Volume:
        async def attempt() -> Volume:
            vol = await self.volume(name, etag=etag)
            inst = await ref(self._store, Instance, instance, "instance")
            if vol.attached_to == inst.name:
                return vol
            if vol.attached_to:
                raise FailedPrecondition(
                    f"{vol.name} is attached to {vol.attached_to}; detach it first"
                )
            if inst.state in _NOT_ATTACHABLE:
                raise FailedPrecondition(f"{inst.name} is {inst.state}; cannot attach volumes")
            if vol.zone and inst.zone and vol.zone != inst.zone:
                raise FailedPrecondition(
                    f"{vol.name} is in zone {vol.zone}, {inst.name} in {inst.zone}"
                )
            if len(inst.volumes) >= MAX_VOLUMES_PER_INSTANCE:
                raise FailedPrecondition(f"{inst.name} already has {len(inst.volumes)} volumes")
            pair: list[Any] = [
                dataclasses.replace(vol, attached_to=inst.name),
                dataclasses.replace(inst, volumes=(*inst.volumes, vol.name)),
            ]
            new_vol, _ = await self._store.update_many(pair)
            assert isinstance(new_vol, Volume)
            return new_vol

        return await retry_races(attempt, guarded=name if etag else "")

    async def detach_volume(self, name: str, *, etag: str = "") -> Volume:
        async def attempt() -> Volume:
            vol = await self.volume(name, etag=etag)
            if not vol.attached_to:
                stored = await self._store.get(Volume, vol.name)
                if stored.attached_to and stored.etag == vol.etag:  # held by a terminated instance
                    return await self._store.update(vol)
                return vol
            detached = dataclasses.replace(vol, attached_to="")
            try:
                inst = await self._store.get(Instance, vol.attached_to)
            except NotFound:
                return await self._store.update(detached)
            pair: list[Any] = [
                detached,
                dataclasses.replace(inst, volumes=tuple(v for v in inst.volumes if v != vol.name)),
            ]
            new_vol, _ = await self._store.update_many(pair)
            assert isinstance(new_vol, Volume)
            return new_vol

        return await retry_races(attempt, guarded=name if etag else "")

    # -- network interfaces -------------------------------------------------------------

    async def interface(self, name: str, *, etag: str = "") -> NetworkInterface:
        nic = await self._store.get(NetworkInterface, name)
        check_etag(name, etag, nic.etag)
        return nic

    async def attach_interface(
        self, name: str, instance: str, *, etag: str = ""
    ) -> NetworkInterface:
        async def attempt() -> NetworkInterface:
            nic = await self.interface(name, etag=etag)
            inst = await ref(self._store, Instance, instance, "instance")
            if nic.instance == inst.name:
                return nic
            if nic.instance:
                raise FailedPrecondition(
                    f"{nic.name} is attached to {nic.instance}; detach it first"
                )
            if inst.state in (InstanceState.TERMINATING, InstanceState.TERMINATED):
                raise FailedPrecondition(f"{inst.name} is {inst.state}")
            pair: list[Any] = [
                dataclasses.replace(nic, instance=inst.name),
                dataclasses.replace(inst, network_interfaces=(*inst.network_interfaces, nic.name)),
            ]
            new_nic, _ = await self._store.update_many(pair)
            assert isinstance(new_nic, NetworkInterface)
            return new_nic

        return await retry_races(attempt, guarded=name if etag else "")

    async def detach_interface(self, name: str, *, etag: str = "") -> NetworkInterface:
        async def attempt() -> NetworkInterface:
            nic = await self.interface(name, etag=etag)
            if not nic.instance:
                return nic
            # a primary interface detached first outlives its instance
            detached = dataclasses.replace(nic, instance="", delete_on_termination=False)
            try:
                inst = await self._store.get(Instance, nic.instance)
            except NotFound:
                return await self._store.update(detached)
            remaining = tuple(n for n in inst.network_interfaces if n != nic.name)
            pair: list[Any] = [detached, dataclasses.replace(inst, network_interfaces=remaining)]
            new_nic, _ = await self._store.update_many(pair)
            assert isinstance(new_nic, NetworkInterface)
            return new_nic

        return await retry_races(attempt, guarded=name if etag else "")
