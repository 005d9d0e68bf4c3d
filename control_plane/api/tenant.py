"""``TenantService``: the mixins for instances, volumes and networking, plus
the read-only catalogue.  Every handler authenticates the bearer token to a
tenant id first; names outside that tenant are NOT_FOUND."""

from __future__ import annotations

from bmaas.v1 import tenant_pb2
from control_plane.api import catalog
from control_plane.api.rpc import Context, unary
from control_plane.api.tenant_instances import InstancesMixin
from control_plane.api.tenant_network import NetworkMixin
from control_plane.api.tenant_volumes import VolumesMixin

SERVICE = "TenantService"


class TenantServicer(InstancesMixin, VolumesMixin, NetworkMixin):
    @unary(SERVICE)
    async def ListImages(
        self, request: tenant_pb2.ListRequest, context: Context
    ) -> tenant_pb2.ListImagesResponse:
        await self.tenant_of(context)
        return await catalog.list_images(self.store, request)

    @unary(SERVICE)
    async def ListInstanceTypes(
        self, request: tenant_pb2.ListRequest, context: Context
    ) -> tenant_pb2.ListInstanceTypesResponse:
        await self.tenant_of(context)
        return await catalog.list_instance_types(self.store, request)
