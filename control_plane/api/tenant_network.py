"""TenantService VPC, subnet, network-interface and placement-group RPCs.

Creates that claim a unique value (a VPC's VNI, an interface's MAC and
address) and attach/detach are ``control_plane.services`` workflows
(``network``, ``attachments``); the servicer validates, resolves references
and converts.  Subnets must lie inside their VPC's CIDR and overlap no
sibling.  Deleting a VPC or an interface frees its claims in the delete
transaction.  Deletes refuse while something still depends on the resource
(FAILED_PRECONDITION, naming the dependant).
"""

from __future__ import annotations

import ipaddress

from bmaas.v1 import common_pb2, tenant_pb2, tenant_pb2_grpc
from control_plane.api import convert, filters, validate
from control_plane.api.base import Servicer
from control_plane.api.errors import InvalidField
from control_plane.api.rpc import Context, unary
from control_plane.domain.compute import Instance
from control_plane.domain.errors import FailedPrecondition
from control_plane.domain.network import NetworkInterface, Subnet, Vpc
from control_plane.domain.placement import PlacementGroup, PlacementStrategy
from control_plane.services.attachments import check_etag

SERVICE = "TenantService"


def _check_etag(name: str, want: str, have: str) -> None:
    check_etag(name, validate.etag(want), have)


class NetworkMixin(Servicer, tenant_pb2_grpc.TenantServiceServicer):
    # -- VPCs ---------------------------------------------------------------------------

    @unary(SERVICE)
    async def CreateVpc(
        self, request: tenant_pb2.CreateVpcRequest, context: Context
    ) -> common_pb2.Vpc:
        tenant = await self.tenant_of(context)
        if not request.HasField("vpc"):
            raise InvalidField("vpc", "is required")
        rid = validate.request_id(request.request_id)
        spec = request.vpc
        vpc_id = (
            validate.owned(spec.name, "vpc.name", "vpcs", tenant).id
            if spec.name
            else validate.new_id("vpc")
        )
        cidr = validate.cidr(spec.cidr, "vpc.cidr", min_prefix=8, max_prefix=28)
        vpc = await self.services.network.create_vpc(
            tenant=tenant,
            vpc_id=vpc_id,
            cidr=cidr,
            request_id=rid,
            fingerprint=validate.fingerprint(request),
        )
        return convert.vpc(vpc)

    @unary(SERVICE)
    async def GetVpc(self, request: tenant_pb2.GetRequest, context: Context) -> common_pb2.Vpc:
        tenant = await self.tenant_of(context)
        name = str(validate.owned(request.name, "name", "vpcs", tenant))
        return convert.vpc(await self.store.get(Vpc, name))

    @unary(SERVICE)
    async def ListVpcs(
        self, request: tenant_pb2.ListRequest, context: Context
    ) -> tenant_pb2.ListVpcsResponse:
        tenant = await self.tenant_of(context)
        size, token, flt = filters.page(request, common_pb2.Vpc, convert.vpc)
        page = await self.store.list(
            Vpc, parent=f"tenants/{tenant}", page_size=size, page_token=token, filter=flt
        )
        return tenant_pb2.ListVpcsResponse(
            vpcs=[convert.vpc(v) for v in page.items], next_page_token=page.next_page_token
        )

    @unary(SERVICE)
    async def DeleteVpc(
        self, request: tenant_pb2.DeleteRequest, context: Context
    ) -> common_pb2.Empty:
        tenant = await self.tenant_of(context)
        name = str(validate.owned(request.name, "name", "vpcs", tenant))
        vpc = await self.store.get(Vpc, name)
        _check_etag(name, request.etag, vpc.etag)
        subnets = await self.store.list(Subnet, parent=name, page_size=1)
        if subnets.items:
            raise FailedPrecondition(f"{name} still has subnet {subnets.items[0].name}")
        await self.store.delete(Vpc, name, etag=vpc.etag)
        return common_pb2.Empty()

    # -- subnets ------------------------------------------------------------------------

    @unary(SERVICE)
    async def CreateSubnet(
        self, request: tenant_pb2.CreateSubnetRequest, context: Context
    ) -> common_pb2.Subnet:
        tenant = await self.tenant_of(context)
        if not request.HasField("subnet"):
            raise InvalidField("subnet", "is required")
        rid = validate.request_id(request.request_id)
        spec = request.subnet
        if spec.name:
            rn = validate.owned(spec.name, "subnet.name", "subnets", tenant)
            vpc_name = f"tenants/{tenant}/vpcs/{rn.ids[1]}"
            if request.parent and request.parent != vpc_name:
                raise InvalidField("parent", f"does not match subnet.name's VPC {vpc_name}")
            subnet_id = rn.id
        else:
            vpc_name = str(validate.owned(request.parent, "parent", "vpcs", tenant))
            subnet_id = validate.new_id("subnet")
        cidr = validate.cidr(spec.cidr, "subnet.cidr", min_prefix=8, max_prefix=28)
        zone = validate.ident(spec.zone, "subnet.zone", required_=False)
        vpc = await self.ref(Vpc, vpc_name, "parent")
        net = ipaddress.ip_network(cidr)
        if not net.subnet_of(ipaddress.ip_network(vpc.cidr)):  # type: ignore[arg-type]
            raise InvalidField("subnet.cidr", f"{cidr} is not inside VPC CIDR {vpc.cidr}")
        siblings, _ = await self.store.list_all(Subnet, parent=vpc_name)
        for other in siblings:
            if net.overlaps(ipaddress.ip_network(other.cidr)) and other.id != subnet_id:
                raise FailedPrecondition(
                    f"subnet.cidr: {cidr} overlaps {other.name} ({other.cidr})"
                )
        subnet = Subnet(
            tenant=tenant, vpc=vpc.id, id=subnet_id, cidr=cidr, zone=zone, request_id=rid
        )
        created = await self.store.create(
            subnet, request_id=rid, fingerprint=validate.fingerprint(request)
        )
        return convert.subnet(created)

    @unary(SERVICE)
    async def GetSubnet(
        self, request: tenant_pb2.GetRequest, context: Context
    ) -> common_pb2.Subnet:
        tenant = await self.tenant_of(context)
        name = str(validate.owned(request.name, "name", "subnets", tenant))
        return convert.subnet(await self.store.get(Subnet, name))

    @unary(SERVICE)
    async def ListSubnets(
        self, request: tenant_pb2.ListRequest, context: Context
    ) -> tenant_pb2.ListSubnetsResponse:
        tenant = await self.tenant_of(context)
        size, token, flt = filters.page(request, common_pb2.Subnet, convert.subnet)
        page = await self.store.list(
            Subnet, parent=f"tenants/{tenant}", page_size=size, page_token=token, filter=flt
        )
        return tenant_pb2.ListSubnetsResponse(
            subnets=[convert.subnet(s) for s in page.items], next_page_token=page.next_page_token
        )

    @unary(SERVICE)
    async def DeleteSubnet(
        self, request: tenant_pb2.DeleteRequest, context: Context
    ) -> common_pb2.Empty:
        tenant = await self.tenant_of(context)
        name = str(validate.owned(request.name, "name", "subnets", tenant))
        subnet = await self.store.get(Subnet, name)
        _check_etag(name, request.etag, subnet.etag)
        parent = f"tenants/{tenant}"
        nics = await self.store.list(
            NetworkInterface, parent=parent, page_size=1, filter=f'subnet="{name}"'
        )
        if nics.items:
            raise FailedPrecondition(f"{name} still has network interface {nics.items[0].name}")
        insts = await self.store.list(
            Instance, parent=parent, page_size=1, filter=f'subnet="{name}" AND state!=TERMINATED'
        )
        if insts.items:
            raise FailedPrecondition(f"{name} is used by {insts.items[0].name}")
        await self.store.delete(Subnet, name, etag=subnet.etag)
        return common_pb2.Empty()

    # -- network interfaces -------------------------------------------------------------

    @unary(SERVICE)
    async def CreateNetworkInterface(
        self, request: tenant_pb2.CreateNetworkInterfaceRequest, context: Context
    ) -> common_pb2.NetworkInterface:
        tenant = await self.tenant_of(context)
        if not request.HasField("network_interface"):
            raise InvalidField("network_interface", "is required")
        rid = validate.request_id(request.request_id)
        spec = request.network_interface
        nic_id = (
            validate.owned(spec.name, "network_interface.name", "networkInterfaces", tenant).id
            if spec.name
            else validate.new_id("eni")
        )
        subnet_name = str(
            validate.owned(spec.subnet, "network_interface.subnet", "subnets", tenant)
        )
        subnet = await self.ref(Subnet, subnet_name, "network_interface.subnet")
        nic = await self.services.network.create_interface(
            tenant=tenant,
            nic_id=nic_id,
            subnet=subnet,
            request_id=rid,
            fingerprint=validate.fingerprint(request),
        )
        return convert.network_interface(nic)

    @unary(SERVICE)
    async def GetNetworkInterface(
        self, request: tenant_pb2.GetRequest, context: Context
    ) -> common_pb2.NetworkInterface:
        tenant = await self.tenant_of(context)
        name = str(validate.owned(request.name, "name", "networkInterfaces", tenant))
        return convert.network_interface(await self.store.get(NetworkInterface, name))

    @unary(SERVICE)
    async def ListNetworkInterfaces(
        self, request: tenant_pb2.ListRequest, context: Context
    ) -> tenant_pb2.ListNetworkInterfacesResponse:
        tenant = await self.tenant_of(context)
        size, token, flt = filters.page(
            request, common_pb2.NetworkInterface, convert.network_interface
        )
        page = await self.store.list(
            NetworkInterface,
            parent=f"tenants/{tenant}",
            page_size=size,
            page_token=token,
            filter=flt,
        )
        return tenant_pb2.ListNetworkInterfacesResponse(
            network_interfaces=[convert.network_interface(n) for n in page.items],
            next_page_token=page.next_page_token,
        )

    async def _nic(self, tenant: str, name_: str, etag: str) -> NetworkInterface:
        name = str(validate.owned(name_, "name", "networkInterfaces", tenant))
        return await self.services.attachments.interface(name, etag=validate.etag(etag))

    @unary(SERVICE)
    async def AttachNetworkInterface(
        self, request: tenant_pb2.AttachNetworkInterfaceRequest, context: Context
    ) -> common_pb2.NetworkInterface:
        tenant = await self.tenant_of(context)
        inst_name = str(validate.owned(request.instance, "instance", "instances", tenant))
        name = str(validate.owned(request.name, "name", "networkInterfaces", tenant))
        etag = validate.etag(request.etag)
        nic = await self.services.attachments.attach_interface(name, inst_name, etag=etag)
        return convert.network_interface(nic)

    @unary(SERVICE)
    async def DetachNetworkInterface(
        self, request: tenant_pb2.DetachNetworkInterfaceRequest, context: Context
    ) -> common_pb2.NetworkInterface:
        tenant = await self.tenant_of(context)
        name = str(validate.owned(request.name, "name", "networkInterfaces", tenant))
        etag = validate.etag(request.etag)
        nic = await self.services.attachments.detach_interface(name, etag=etag)
        return convert.network_interface(nic)

    @unary(SERVICE)
    async def DeleteNetworkInterface(
        self, request: tenant_pb2.DeleteRequest, context: Context
    ) -> common_pb2.Empty:
        tenant = await self.tenant_of(context)
        nic = await self._nic(tenant, request.name, request.etag)
        if nic.instance:
            raise FailedPrecondition(f"{nic.name} is attached to {nic.instance}; detach it first")
        await self.store.delete(NetworkInterface, nic.name, etag=nic.etag)
        return common_pb2.Empty()

    # -- placement groups ---------------------------------------------------------------

    @unary(SERVICE)
    async def CreatePlacementGroup(
        self, request: tenant_pb2.CreatePlacementGroupRequest, context: Context
    ) -> common_pb2.PlacementGroup:
        tenant = await self.tenant_of(context)
        if not request.HasField("placement_group"):
            raise InvalidField("placement_group", "is required")
        rid = validate.request_id(request.request_id)
        spec = request.placement_group
        validate.etag(spec.etag, "placement_group.etag")  # output only: ignored, but bounded
        group_id = (
            validate.owned(spec.name, "placement_group.name", "placementGroups", tenant).id
            if spec.name
            else validate.new_id("pg")
        )
        if spec.strategy not in (
            common_pb2.PLACEMENT_STRATEGY_UNSPECIFIED,
            common_pb2.PLACEMENT_STRATEGY_SPREAD_RACKS,
        ):
            raise InvalidField("placement_group.strategy", f"unknown strategy {spec.strategy}")
        group = PlacementGroup(
            tenant=tenant, id=group_id, strategy=PlacementStrategy.SPREAD_RACKS, request_id=rid
        )
        created = await self.store.create(
            group, request_id=rid, fingerprint=validate.fingerprint(request)
        )
        return convert.placement_group(created)

    @unary(SERVICE)
    async def GetPlacementGroup(
        self, request: tenant_pb2.GetRequest, context: Context
    ) -> common_pb2.PlacementGroup:
        tenant = await self.tenant_of(context)
        name = str(validate.owned(request.name, "name", "placementGroups", tenant))
        return convert.placement_group(await self.store.get(PlacementGroup, name))

    @unary(SERVICE)
    async def ListPlacementGroups(
        self, request: tenant_pb2.ListRequest, context: Context
    ) -> tenant_pb2.ListPlacementGroupsResponse:
        tenant = await self.tenant_of(context)
        size, token, flt = filters.page(request, common_pb2.PlacementGroup, convert.placement_group)
        page = await self.store.list(
            PlacementGroup, parent=f"tenants/{tenant}", page_size=size, page_token=token, filter=flt
        )
        return tenant_pb2.ListPlacementGroupsResponse(
            placement_groups=[convert.placement_group(g) for g in page.items],
            next_page_token=page.next_page_token,
        )

    @unary(SERVICE)
    async def DeletePlacementGroup(
        self, request: tenant_pb2.DeleteRequest, context: Context
    ) -> common_pb2.Empty:
        tenant = await self.tenant_of(context)
        name = str(validate.owned(request.name, "name", "placementGroups", tenant))
        group = await self.store.get(PlacementGroup, name)
        _check_etag(name, request.etag, group.etag)
        users = await self.store.list(
            Instance,
            parent=f"tenants/{tenant}",
            page_size=1,
            filter=f'placement_group="{name}" AND state!=TERMINATED',
        )
        if users.items:
            raise FailedPrecondition(f"{name} is used by {users.items[0].name}")
        await self.store.delete(PlacementGroup, name, etag=group.etag)
        return common_pb2.Empty()
