"""Instances: the CreateInstance saga and the instance actions.

``create``, for an instance the API has validated and whose references it
has resolved (``volumes``: the data volumes as read, detached; ``subnet``:
the subnet of its primary interface, or None):

0. with a subnet, the primary network interface is created first, already
   naming the instance (``<instance id>-eth0``, ``delete_on_termination``;
   its own ``request_id`` derived from the instance's, so a retried create
   replays it), and the instance lists it from its first write: the
   interface is in the instance's first desired state, so it is there when
   the server powers on.  Every refusal below deletes it again (the undo);
   a process dying in between leaves an interface naming an instance that
   does not exist, which a retry with the same ``request_id`` adopts;
1. without data volumes (the common case) ``Placer.create_placed`` writes
   the instance already SCHEDULED on a host in ONE transaction (host
   allocation, quota charge and idempotency record with it); a lost race on
   the host tries the next candidate.  When no host fits (or every race was
   lost) nothing was written and the steps below run, which tell a replayed
   ``request_id`` apart and refuse;
2. ``Store.create_or_replay`` writes the PENDING instance and charges the
   tenant's instance quota in one transaction, idempotent on ``request_id``
   (a retry returns the first call's instance, and runs nothing below);
3. data volumes are marked attached in one CAS transaction on the etags
   they were read with (a concurrent change aborts the create, which is
   then undone: the instance is deleted);
4. ``Placer.place`` binds a host in one CAS transaction.  With no matching
   host the saga is undone -- volumes released (if the instance still holds
   them), instance deleted (releasing its quota) -- and ``NoCapacity``
   raised, so a refused create leaves nothing behind (the primary
   interface included).

If the process dies between steps, the PENDING instance is picked up by the
scheduling controller (level-triggered): nothing is stuck.  Actions (start,
stop, reboot, terminate) are table-driven (``domain.lifecycle``)
read-modify-CAS updates; one whose effect is already underway returns the
instance unchanged, so client retries are safe.
"""

from __future__ import annotations

import contextlib
import dataclasses
from functools import partial
from typing import Protocol

from control_plane import metrics
from control_plane.domain.compute import Instance
from control_plane.domain.errors import Aborted, BmaasError, NoCapacity, NotFound
from control_plane.domain.lifecycle import InstanceEvent, InstanceState
from control_plane.domain.network import NetworkInterface, Subnet
from control_plane.domain.transitions import apply_instance_event
from control_plane.domain.volume import Volume
from control_plane.services.network import Network
from control_plane.store import Created, Store

PLACE_ATTEMPTS = 5

#: action -> (event, states in which the action is already underway or done)
ACTIONS: dict[str, tuple[InstanceEvent, frozenset[InstanceState]]] = {
    "start": (InstanceEvent.START, frozenset({InstanceState.STARTING, InstanceState.RUNNING})),
    "stop": (InstanceEvent.STOP, frozenset({InstanceState.STOPPING, InstanceState.STOPPED})),
    "reboot": (InstanceEvent.REBOOT, frozenset({InstanceState.REBOOTING})),
    "terminate": (
        InstanceEvent.TERMINATE,
        frozenset({InstanceState.TERMINATING, InstanceState.TERMINATED}),
    ),
}


class Placer(Protocol):
    """What the saga needs from the scheduler."""

    async def place(self, instance: Instance) -> Instance:
        """Bind *instance* (PENDING) to a host; the SCHEDULED instance, or ``NoCapacity``."""
        ...

    async def create_placed(
        self, instance: Instance, *, request_id: str, fingerprint: str
    ) -> Created[Instance]:
        """Create the new *instance* bound to a host in one transaction
        (``Store.create_or_replay`` semantics); ``NoCapacity`` writes nothing."""
        ...


class Instances:
    def __init__(self, store: Store, placer: Placer, network: Network) -> None:
        self._store = store
        self._placer = placer
        self._network = network

    async def create(
        self,
        inst: Instance,
        volumes: list[Volume],
        *,
        fingerprint: str,
        subnet: Subnet | None = None,
    ) -> Created[Instance]:
        """Run the saga (module docstring) for the new PENDING *inst*."""
        if subnet is None:
            return await self._create(inst, volumes, fingerprint=fingerprint)
        nic = await self._network.create_interface(
            tenant=inst.tenant,
            nic_id=f"{inst.id}-eth0",
            subnet=subnet,
            request_id=f"{inst.request_id}-eth0" if inst.request_id else "",
            fingerprint=fingerprint,
            instance=inst.name,
            delete_on_termination=True,
        )
        inst = dataclasses.replace(inst, network_interfaces=(nic.name, *inst.network_interfaces))
        try:
            return await self._create(inst, volumes, fingerprint=fingerprint)
        except BmaasError:
            with contextlib.suppress(NotFound):
                await self._store.delete(NetworkInterface, nic.name)
            raise

    async def _create(
        self, inst: Instance, volumes: list[Volume], *, fingerprint: str
    ) -> Created[Instance]:
        if not volumes:
            try:
                placed = await self._placer.create_placed(
                    inst, request_id=inst.request_id, fingerprint=fingerprint
                )
            except (NoCapacity, Aborted):
                # nothing was written: the step-by-step path below tells a
                # replayed request_id from a real refusal, and undoes its own
                pass
            else:
                if not placed.replayed:
                    metrics.INSTANCES_CREATED.inc()
                return placed
        result = await self._store.create_or_replay(
            inst, request_id=inst.request_id, fingerprint=fingerprint
        )
        if result.replayed:
            # a retried request_id returns the first call's record: report it
            # and never run (or undo) the rest of the create for it
            return result
        created = result.record
        metrics.INSTANCES_CREATED.inc()
        if volumes:
            try:
                await self._store.update_many(
                    [dataclasses.replace(v, attached_to=created.name) for v in volumes]
                )
            except BmaasError:
                await self._store.delete(Instance, created.name)
                raise
        try:
            return Created(await self._place(created), False)
        except NoCapacity as exc:
            metrics.PLACEMENT_FAILURES.labels("no_capacity").inc()
            await self._undo_create(created, volumes)
            raise NoCapacity(f"no capacity for {inst.instance_type}: {exc}") from exc

    async def _place(self, inst: Instance) -> Instance:
        """Place *inst*; if the scheduling controller (which also retries
        PENDING instances) touched it meanwhile, re-read and either report
        its placement or try again with the fresh record."""
        for _ in range(PLACE_ATTEMPTS):
            try:
                return await self._placer.place(inst)
            except Aborted:
                inst = await self._store.get(Instance, inst.name)
                if inst.state != InstanceState.PENDING:
                    return inst
        raise Aborted(f"{inst.name}: placement kept racing; retry with the same request_id")

    async def _undo_create(self, inst: Instance, volumes: list[Volume]) -> None:
        for vol in volumes:
            with contextlib.suppress(NotFound):
                await self._store.mutate(Volume, vol.name, partial(_release, owner=inst.name))
        await self._store.delete(Instance, inst.name)

    async def act(self, action: str, name: str, *, etag: str = "") -> Instance:
        """Apply *action* (a key of ``ACTIONS``) to the instance *name*."""
        event, underway = ACTIONS[action]

        def change(inst: Instance) -> Instance:
            if inst.state in underway:
                return inst
            return apply_instance_event(inst, event)

        return await self._store.mutate(Instance, name, change, etag=etag)


def _release(vol: Volume, *, owner: str) -> Volume:
    """Detach *vol* if *owner* still holds it (undo of a refused create)."""
    return dataclasses.replace(vol, attached_to="") if vol.attached_to == owner else vol
