"""TenantService instance RPCs.

CreateInstance, in order, so that bad input never writes anything:

1. authenticate; validate every field and resolve every reference (type,
   image, subnet, placement group, volumes) with reads only;
1b. without data volumes (the common case) ``Placer.create_placed`` does
   steps 2 and 4 in ONE transaction: the instance is written already
   SCHEDULED on a host (PENDING -> SCHEDULED through the lifecycle table in
   memory), with the host allocation, quota charge and idempotency record;
   a lost race on the host tries the next candidate.  When no host fits
   (or every race was lost) nothing was written and the steps below run,
   which tell a replayed ``request_id`` apart and refuse RESOURCE_EXHAUSTED;
2. ``store.create`` writes the PENDING instance and charges the tenant's
   instance quota in one transaction, idempotent on ``request_id`` (a retry
   returns the first call's instance; a different request under the same id
   is INVALID_ARGUMENT via the request fingerprint);
3. data volumes are marked attached in one CAS transaction on the etags read
   in step 1 (a concurrent change aborts the create, which is then undone);
4. ``Placer.place`` binds a host in one CAS transaction.  With no matching
   host the instance is deleted again (releasing quota and volumes) and the
   call fails RESOURCE_EXHAUSTED, so a refused create leaves nothing behind.

If the process dies between steps, the PENDING instance is picked up by the
scheduling controller (level-triggered) - nothing is stuck.  Start, stop,
reboot and terminate are table-driven (``domain.lifecycle``) read-modify-CAS
updates; repeating an action whose effect is already underway returns the
instance unchanged, so client retries are safe.
"""

from __future__ import annotations

import contextlib
import dataclasses
from functools import partial

from bmaas.v1 import common_pb2, tenant_pb2, tenant_pb2_grpc
from control_plane import metrics
from control_plane.api import convert, filters, validate
from control_plane.api.base import Servicer
from control_plane.api.errors import InvalidField
from control_plane.api.rpc import Context, unary
from control_plane.domain.compute import Image, Instance, InstanceType
from control_plane.domain.errors import (
    Aborted,
    BmaasError,
    FailedPrecondition,
    NoCapacity,
    NotFound,
)
from control_plane.domain.lifecycle import InstanceEvent, InstanceState
from control_plane.domain.network import Subnet
from control_plane.domain.placement import PlacementGroup
from control_plane.domain.transitions import apply_instance_event
from control_plane.domain.volume import Volume

SERVICE = "TenantService"
CONSOLE_DEFAULT_BYTES = 64 * 1024
PLACE_ATTEMPTS = 5

#: action -> (event, states in which the action is already underway or done)
_ACTIONS: dict[str, tuple[InstanceEvent, frozenset[InstanceState]]] = {
    "start": (InstanceEvent.START, frozenset({InstanceState.STARTING, InstanceState.RUNNING})),
    "stop": (InstanceEvent.STOP, frozenset({InstanceState.STOPPING, InstanceState.STOPPED})),
    "reboot": (InstanceEvent.REBOOT, frozenset({InstanceState.REBOOTING})),
    "terminate": (
        InstanceEvent.TERMINATE,
        frozenset({InstanceState.TERMINATING, InstanceState.TERMINATED}),
    ),
}


class InstancesMixin(Servicer, tenant_pb2_grpc.TenantServiceServicer):
    async def _resolve_instance(
        self, tenant: str, req: tenant_pb2.CreateInstanceRequest
    ) -> tuple[Instance, list[Volume]]:
        spec = req.instance
        rid = validate.request_id(req.request_id)
        if spec.name:
            inst_id = validate.owned(spec.name, "instance.name", "instances", tenant).id
        else:
            inst_id = validate.new_id("i")
        type_name = str(
            validate.name(spec.instance_type, "instance.instance_type", "instanceTypes")
        )
        image_name = str(validate.name(spec.image, "instance.image", "images"))
        user_data = validate.user_data(spec.user_data, "instance.user_data")
        ssh_keys = validate.ssh_keys(list(spec.ssh_keys), "instance.ssh_keys")
        zone = validate.ident(spec.zone, "instance.zone", required_=False)
        if len(spec.volumes) > validate.MAX_VOLUMES_PER_INSTANCE:
            raise InvalidField(
                "instance.volumes", f"at most {validate.MAX_VOLUMES_PER_INSTANCE} volumes"
            )
        if len(set(spec.volumes)) != len(spec.volumes):
            raise InvalidField("instance.volumes", "lists a volume twice")
        vol_names = [
            str(validate.owned(v, f"instance.volumes[{i}]", "volumes", tenant))
            for i, v in enumerate(spec.volumes)
        ]
        subnet_name = ""
        if spec.subnet:
            subnet_name = str(validate.owned(spec.subnet, "instance.subnet", "subnets", tenant))
        group_name = ""
        if spec.placement_group:
            group_name = str(
                validate.owned(
                    spec.placement_group, "instance.placement_group", "placementGroups", tenant
                )
            )
        # References must exist (reads only).
        await self.catalog_ref(InstanceType, type_name, "instance.instance_type")
        await self.catalog_ref(Image, image_name, "instance.image")
        if subnet_name:
            subnet = await self.ref(Subnet, subnet_name, "instance.subnet")
            if zone and subnet.zone and subnet.zone != zone:
                raise InvalidField(
                    "instance.zone", f"{zone} differs from the subnet's zone {subnet.zone}"
                )
            zone = zone or subnet.zone
        if group_name:
            await self.ref(PlacementGroup, group_name, "instance.placement_group")
        volumes: list[Volume] = []
        for i, vname in enumerate(vol_names):
            vol = await self.ref(Volume, vname, f"instance.volumes[{i}]")
            if vol.attached_to:
                raise FailedPrecondition(
                    f"instance.volumes[{i}]: {vname} is attached to {vol.attached_to}"
                )
            if zone and vol.zone and vol.zone != zone:
                raise FailedPrecondition(
                    f"instance.volumes[{i}]: {vname} is in zone {vol.zone}, not {zone}"
                )
            zone = zone or vol.zone
            volumes.append(vol)
        inst = Instance(
            tenant=tenant,
            id=inst_id,
            instance_type=type_name,
            image=image_name,
            subnet=subnet_name,
            zone=zone,
            volumes=tuple(vol_names),
            user_data=user_data,
            ssh_keys=ssh_keys,
            placement_group=group_name,
            state=InstanceState.PENDING,
            target_state=InstanceState.RUNNING,
            request_id=rid,
        )
        return inst, volumes

    @unary(SERVICE)
    async def CreateInstance(
        self, request: tenant_pb2.CreateInstanceRequest, context: Context
    ) -> common_pb2.Instance:
        tenant = await self.tenant_of(context)
        if not request.HasField("instance"):
            raise InvalidField("instance", "is required")
        inst, volumes = await self._resolve_instance(tenant, request)
        fingerprint = validate.fingerprint(request)
        if not volumes:
            try:
                placed = await self.deps.placer.create_placed(
                    inst, request_id=inst.request_id, fingerprint=fingerprint
                )
            except (NoCapacity, Aborted):
                # nothing was written: the step-by-step path below tells a
                # replayed request_id from a real refusal, and undoes its own
                pass
            else:
                if not placed.replayed:
                    metrics.INSTANCES_CREATED.inc()
                return convert.instance(placed.record)
        result = await self.store.create_or_replay(
            inst, request_id=inst.request_id, fingerprint=fingerprint
        )
        created = result.record
        if result.replayed:
            # a retried request_id returns the first call's record: report it
            # and never run (or undo) the rest of the create for it
            return convert.instance(created)
        metrics.INSTANCES_CREATED.inc()
        if volumes:
            try:
                await self.store.update_many(
                    [dataclasses.replace(v, attached_to=created.name) for v in volumes]
                )
            except BmaasError:
                await self.store.delete(Instance, created.name)
                raise
        try:
            return convert.instance(await self._place(created))
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
                return await self.deps.placer.place(inst)
            except Aborted:
                inst = await self.store.get(Instance, inst.name)
                if inst.state != InstanceState.PENDING:
                    return inst
        raise Aborted(f"{inst.name}: placement kept racing; retry with the same request_id")

    async def _undo_create(self, inst: Instance, volumes: list[Volume]) -> None:
        for vol in volumes:
            with contextlib.suppress(NotFound):
                await self.store.mutate(Volume, vol.name, partial(_release, owner=inst.name))
        await self.store.delete(Instance, inst.name)

    @unary(SERVICE)
    async def GetInstance(
        self, request: tenant_pb2.GetRequest, context: Context
    ) -> common_pb2.Instance:
        tenant = await self.tenant_of(context)
        name = str(validate.owned(request.name, "name", "instances", tenant))
        return convert.instance(await self.store.get(Instance, name))

    @unary(SERVICE)
    async def ListInstances(
        self, request: tenant_pb2.ListRequest, context: Context
    ) -> tenant_pb2.ListInstancesResponse:
        tenant = await self.tenant_of(context)
        size, token, flt = filters.page(request, common_pb2.Instance, convert.instance)
        page = await self.store.list(
            Instance, parent=f"tenants/{tenant}", page_size=size, page_token=token, filter=flt
        )
        return tenant_pb2.ListInstancesResponse(
            instances=[convert.instance(i) for i in page.items],
            next_page_token=page.next_page_token,
        )

    async def _action(
        self, action: str, request: tenant_pb2.InstanceActionRequest, context: Context
    ) -> common_pb2.Instance:
        tenant = await self.tenant_of(context)
        name = str(validate.owned(request.name, "name", "instances", tenant))
        etag = validate.etag(request.etag)
        validate.request_id(request.request_id)
        event, underway = _ACTIONS[action]

        def change(inst: Instance) -> Instance:
            if inst.state in underway:
                return inst
            return apply_instance_event(inst, event)

        return convert.instance(await self.store.mutate(Instance, name, change, etag=etag))

    @unary(SERVICE)
    async def StartInstance(
        self, request: tenant_pb2.InstanceActionRequest, context: Context
    ) -> common_pb2.Instance:
        return await self._action("start", request, context)

    @unary(SERVICE)
    async def StopInstance(
        self, request: tenant_pb2.InstanceActionRequest, context: Context
    ) -> common_pb2.Instance:
        return await self._action("stop", request, context)

    @unary(SERVICE)
    async def RebootInstance(
        self, request: tenant_pb2.InstanceActionRequest, context: Context
    ) -> common_pb2.Instance:
        return await self._action("reboot", request, context)

    @unary(SERVICE)
    async def TerminateInstance(
        self, request: tenant_pb2.InstanceActionRequest, context: Context
    ) -> common_pb2.Instance:
        return await self._action("terminate", request, context)

    @unary(SERVICE)
    async def GetConsoleOutput(
        self, request: tenant_pb2.GetConsoleOutputRequest, context: Context
    ) -> tenant_pb2.ConsoleOutput:
        tenant = await self.tenant_of(context)
        name = str(validate.owned(request.name, "name", "instances", tenant))
        max_bytes = validate.int_range(request.max_bytes, "max_bytes", 0, 1024 * 1024)
        inst = await self.store.get(Instance, name)
        if not inst.host:
            raise FailedPrecondition(f"{name} has no host yet (state {inst.state})")
        raw = await self.store.consoles.get(name)
        return tenant_pb2.ConsoleOutput(
            instance=name, output=raw[-(max_bytes or CONSOLE_DEFAULT_BYTES) :]
        )


def _release(vol: Volume, *, owner: str) -> Volume:
    """Detach *vol* if *owner* still holds it (undo of a refused create)."""
    return dataclasses.replace(vol, attached_to="") if vol.attached_to == owner else vol
