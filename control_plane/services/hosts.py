"""Operator workflows on hosts that touch more than the host record."""

from __future__ import annotations

import contextlib
import dataclasses

from control_plane.domain.compute import Instance
from control_plane.domain.errors import InvalidTransition
from control_plane.domain.host import Host
from control_plane.domain.lifecycle import InstanceEvent, InstanceState
from control_plane.domain.transitions import apply_instance_event
from control_plane.store import Store


class Hosts:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def set_cordoned(self, name: str, cordoned: bool, *, etag: str = "") -> Host:
        return await self._store.mutate(
            Host, name, lambda h: dataclasses.replace(h, cordoned=cordoned), etag=etag
        )

    async def drain(self, name: str, *, etag: str = "") -> Host:
        """Cordon the host (no new instance lands on it), then terminate the
        instance it carries; the controllers release and clean the host as
        for any termination.  Safe to repeat."""
        host = await self.set_cordoned(name, True, etag=etag)
        if host.assigned_instance:

            def terminate(inst: Instance) -> Instance:
                if inst.state in (InstanceState.TERMINATING, InstanceState.TERMINATED):
                    return inst
                return apply_instance_event(inst, InstanceEvent.TERMINATE)

            with contextlib.suppress(InvalidTransition):
                await self._store.mutate(Instance, host.assigned_instance, terminate)
        return host
