"""TenantService volume RPCs (cloud disks served by the card as vhost-user-blk).

A volume's ``size_gib`` is charged to the tenant's ``max_volume_gib`` quota
by the store in the transaction that creates or resizes it (the quota check
and the counter write are one compare-and-swap, so concurrent resizes of a
tenant's volumes cannot overshoot ``max_volume_gib`` together).  Attach and
detach change the volume and the instance in ONE transaction compared on
both etags, so the two records never disagree about an attachment; a
concurrent change to either surfaces as ABORTED and the client retries with
fresh etags.  A volume can be attached only to an instance of the same
tenant and zone that is not terminating, and deleted only when detached.
"""

from __future__ import annotations

import dataclasses

from bmaas.v1 import common_pb2, tenant_pb2, tenant_pb2_grpc
from control_plane.api import convert, filters, validate
from control_plane.api.base import Servicer
from control_plane.api.errors import InvalidField
from control_plane.api.rpc import Context, unary
from control_plane.domain.compute import Image
from control_plane.domain.errors import FailedPrecondition
from control_plane.domain.lifecycle import InstanceState
from control_plane.domain.validation import MAX_VOLUME_GIB, validate_volume_qos
from control_plane.domain.volume import Volume

SERVICE = "TenantService"
_NOT_ATTACHABLE = frozenset(
    {InstanceState.TERMINATING, InstanceState.TERMINATED, InstanceState.FAILED}
)


class VolumesMixin(Servicer, tenant_pb2_grpc.TenantServiceServicer):
    @unary(SERVICE)
    async def CreateVolume(
        self, request: tenant_pb2.CreateVolumeRequest, context: Context
    ) -> common_pb2.Volume:
        tenant = await self.tenant_of(context)
        if not request.HasField("volume"):
            raise InvalidField("volume", "is required")
        spec = request.volume
        rid = validate.request_id(request.request_id)
        vol_id = (
            validate.owned(spec.name, "volume.name", "volumes", tenant).id
            if spec.name
            else validate.new_id("vol")
        )
        size = validate.int_range(spec.size_gib, "volume.size_gib", 1, MAX_VOLUME_GIB)
        zone = validate.ident(spec.zone, "volume.zone", required_=False)
        image = ""
        if spec.image:
            image = str(validate.name(spec.image, "volume.image", "images"))
            img = await self.ref(Image, image, "volume.image")
            if size < img.size_gib:
                raise InvalidField(
                    "volume.size_gib", f"{size} is smaller than the image's {img.size_gib} GiB"
                )
        iops, mbps = validate_volume_qos(spec.max_iops, spec.max_mbps, prefix="volume.")
        vol = Volume(
            tenant=tenant,
            id=vol_id,
            size_gib=size,
            zone=zone,
            image=image,
            max_iops=iops,
            max_mbps=mbps,
            request_id=rid,
        )
        created = await self.store.create(
            vol, request_id=rid, fingerprint=validate.fingerprint(request)
        )
        return convert.volume(created)

    @unary(SERVICE)
    async def GetVolume(
        self, request: tenant_pb2.GetRequest, context: Context
    ) -> common_pb2.Volume:
        tenant = await self.tenant_of(context)
        name = str(validate.owned(request.name, "name", "volumes", tenant))
        return convert.volume(await self.store.get(Volume, name))

    @unary(SERVICE)
    async def ListVolumes(
        self, request: tenant_pb2.ListRequest, context: Context
    ) -> tenant_pb2.ListVolumesResponse:
        tenant = await self.tenant_of(context)
        size, token, flt = filters.page(request, common_pb2.Volume, convert.volume)
        page = await self.store.list(
            Volume, parent=f"tenants/{tenant}", page_size=size, page_token=token, filter=flt
        )
        return tenant_pb2.ListVolumesResponse(
            volumes=[convert.volume(v) for v in page.items], next_page_token=page.next_page_token
        )

    async def _volume(self, tenant: str, name_: str, etag: str) -> Volume:
        """The volume (``Attachments.volume``: an attachment to a TERMINATED
        instance shows as released), compared on *etag*."""
        name = str(validate.owned(name_, "name", "volumes", tenant))
        return await self.services.attachments.volume(name, etag=validate.etag(etag))

    @unary(SERVICE)
    async def AttachVolume(
        self, request: tenant_pb2.AttachVolumeRequest, context: Context
    ) -> common_pb2.Volume:
        tenant = await self.tenant_of(context)
        inst_name = str(validate.owned(request.instance, "instance", "instances", tenant))
        name = str(validate.owned(request.name, "name", "volumes", tenant))
        etag = validate.etag(request.etag)
        return convert.volume(
            await self.services.attachments.attach_volume(name, inst_name, etag=etag)
        )

    @unary(SERVICE)
    async def DetachVolume(
        self, request: tenant_pb2.DetachVolumeRequest, context: Context
    ) -> common_pb2.Volume:
        tenant = await self.tenant_of(context)
        name = str(validate.owned(request.name, "name", "volumes", tenant))
        etag = validate.etag(request.etag)
        return convert.volume(await self.services.attachments.detach_volume(name, etag=etag))

    @unary(SERVICE)
    async def ResizeVolume(
        self, request: tenant_pb2.ResizeVolumeRequest, context: Context
    ) -> common_pb2.Volume:
        tenant = await self.tenant_of(context)
        size = validate.int_range(request.size_gib, "size_gib", 1, MAX_VOLUME_GIB)
        vol = await self._volume(tenant, request.name, request.etag)
        if size < vol.size_gib:
            raise InvalidField("size_gib", f"volumes only grow ({vol.size_gib} -> {size} GiB)")
        if size == vol.size_gib:
            return convert.volume(vol)
        # the store checks the growth against the quota in the txn that writes it
        return convert.volume(await self.store.update(dataclasses.replace(vol, size_gib=size)))

    @unary(SERVICE)
    async def UpdateVolume(
        self, request: tenant_pb2.UpdateVolumeRequest, context: Context
    ) -> common_pb2.Volume:
        """Set the volume's QoS limits; an attached volume's back-end follows
        on the agent's next sync (no detach)."""
        tenant = await self.tenant_of(context)
        iops, mbps = validate_volume_qos(request.max_iops, request.max_mbps)
        vol = await self._volume(tenant, request.name, request.etag)
        if (vol.max_iops, vol.max_mbps) == (iops, mbps):
            return convert.volume(vol)
        changed = dataclasses.replace(vol, max_iops=iops, max_mbps=mbps)
        return convert.volume(await self.store.update(changed))

    @unary(SERVICE)
    async def DeleteVolume(
        self, request: tenant_pb2.DeleteRequest, context: Context
    ) -> common_pb2.Empty:
        tenant = await self.tenant_of(context)
        vol = await self._volume(tenant, request.name, request.etag)
        if vol.attached_to:
            raise FailedPrecondition(
                f"{vol.name} is attached to {vol.attached_to}; detach it first"
            )
        await self.store.delete(Volume, vol.name, etag=vol.etag)
        return common_pb2.Empty()
