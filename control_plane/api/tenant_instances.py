"""TenantService instance RPCs.

CreateInstance authenticates, validates every field and resolves every
reference (type, image, subnet, placement group, volumes) with reads only,
so bad input never writes anything; then ``services.instances`` runs the
saga: the primary interface when a subnet is given, create, place, undo.
Actions call ``Instances.act``.
"""

from __future__ import annotations

from bmaas.v1 import common_pb2, tenant_pb2, tenant_pb2_grpc
from control_plane.api import convert, filters, validate
from control_plane.api.base import Servicer
from control_plane.api.errors import InvalidField
from control_plane.api.rpc import Context, unary
from control_plane.domain.compute import Image, Instance, InstanceType
from control_plane.domain.errors import FailedPrecondition
from control_plane.domain.lifecycle import InstanceState
from control_plane.domain.network import Subnet
from control_plane.domain.placement import PlacementGroup
from control_plane.domain.volume import Volume

SERVICE = "TenantService"
CONSOLE_DEFAULT_BYTES = 64 * 1024


class InstancesMixin(Servicer, tenant_pb2_grpc.TenantServiceServicer):
    async def _resolve_instance(
        self, tenant: str, req: tenant_pb2.CreateInstanceRequest
    ) -> tuple[Instance, list[Volume], Subnet | None]:
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
        metadata_tokens = convert.metadata_tokens_from_pb(spec.metadata_tokens)
        if metadata_tokens is None:
            raise InvalidField("instance.metadata_tokens", "must be REQUIRED or OPTIONAL")
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
        subnet: Subnet | None = None
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
            metadata_tokens=metadata_tokens,
            state=InstanceState.PENDING,
            target_state=InstanceState.RUNNING,
            request_id=rid,
        )
        return inst, volumes, subnet

    @unary(SERVICE)
    async def CreateInstance(
        self, request: tenant_pb2.CreateInstanceRequest, context: Context
    ) -> common_pb2.Instance:
        tenant = await self.tenant_of(context)
        if not request.HasField("instance"):
            raise InvalidField("instance", "is required")
        inst, volumes, subnet = await self._resolve_instance(tenant, request)
        created = await self.services.instances.create(
            inst, volumes, fingerprint=validate.fingerprint(request), subnet=subnet
        )
        return convert.instance(created.record)

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
        return convert.instance(await self.services.instances.act(action, name, etag=etag))

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
