"""TenantService VPC, subnet, network-interface and placement-group RPCs.

VPCs get a random 24-bit VXLAN VNI and network interfaces a random locally
administered MAC (``02:..``), each unique by construction: the store claims
the value in the create transaction (``vnis/{vni}`` / ``macs/{mac}``
compared absent, global), so a drawn value another VPC or interface holds
fails the txn (``VniInUse`` / ``MacInUse``) and the create draws again, at
most ``_CLAIM_ATTEMPTS`` times (then ABORTED: with 16M VNIs or 2^40 MACs
that means the space is nearly full or the random source is broken).
Subnets must lie inside their VPC's CIDR and overlap no sibling.  An
interface's address is the lowest free one of its subnet above the gateway
(``.1``) and reserved ``.2``/``.3``, chosen from the subnet's address
claims and claimed in the same create transaction (``addresses/...``), so
of two concurrent creates picking the same address exactly one wins and the
other (``AddressInUse``) picks the next one.  A replayed ``request_id``
returns the first call's record (the store checks the request before the
claims), whatever was drawn this time.  Deleting a VPC or an interface
frees its claims in the delete transaction.  Attach/detach write the
interface and the instance in one transaction compared on both etags.
Deletes refuse while something still depends on the resource
(FAILED_PRECONDITION, naming the dependant).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import secrets
from typing import Any

from bmaas.v1 import common_pb2, tenant_pb2, tenant_pb2_grpc
from control_plane.api import convert, filters, validate
from control_plane.api.base import Servicer
from control_plane.api.errors import InvalidField
from control_plane.api.rpc import Context, unary
from control_plane.domain.compute import Instance
from control_plane.domain.errors import Aborted, FailedPrecondition, NotFound, ResourceExhausted
from control_plane.domain.lifecycle import InstanceState
from control_plane.domain.network import VNI_MAX, VNI_MIN, NetworkInterface, Subnet, Vpc
from control_plane.domain.placement import PlacementGroup, PlacementStrategy
from control_plane.store import AddressInUse, MacInUse, VniInUse

SERVICE = "TenantService"
_RESERVED_HOSTS = 3  # .1 gateway, .2 DHCP/metadata, .3 DNS
#: creates of one interface that may lose their address to a concurrent create
_ADDRESS_ATTEMPTS = 64
#: random VNIs / MACs one create draws before giving up (each drawn value is
#: claimed in the create txn; a taken one costs one more txn)
_CLAIM_ATTEMPTS = 16


def _draw_vni() -> int:
    """A random VXLAN network identifier (the create claims it)."""
    return VNI_MIN + secrets.randbelow(VNI_MAX - VNI_MIN + 1)


def _draw_mac() -> str:
    """A random locally administered unicast MAC (the create claims it)."""
    return "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))


def _check_etag(name: str, want: str, have: str) -> None:
    if validate.etag(want) and want != have:
        raise Aborted(f"{name}: etag {want} is stale (now {have})")


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
        fingerprint = validate.fingerprint(request)
        for _ in range(_CLAIM_ATTEMPTS):
            vpc = Vpc(tenant=tenant, id=vpc_id, cidr=cidr, vni=_draw_vni(), request_id=rid)
            try:
                created = await self.store.create(vpc, request_id=rid, fingerprint=fingerprint)
            except VniInUse:
                continue  # another VPC holds it: draw again
            return convert.vpc(created)
        raise Aborted(
            f"vpc: {_CLAIM_ATTEMPTS} random VXLAN VNIs in a row were already taken; retry"
        )

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
        fingerprint = validate.fingerprint(request)
        skip: set[str] = set()
        mac, mac_draws = _draw_mac(), 1
        ip: str | None = None
        for _ in range(_ADDRESS_ATTEMPTS):
            if ip is None:
                ip = await self._free_ip(subnet, skip)
            nic = NetworkInterface(
                tenant=tenant,
                id=nic_id,
                subnet=subnet_name,
                mac=mac,
                ip_address=ip,
                request_id=rid,
            )
            try:
                created = await self.store.create(nic, request_id=rid, fingerprint=fingerprint)
            except AddressInUse as exc:
                skip.add(exc.address)  # a concurrent create took it first: next one
                ip = None
                continue
            except MacInUse:
                if mac_draws >= _CLAIM_ATTEMPTS:
                    raise Aborted(
                        f"network_interface: {_CLAIM_ATTEMPTS} random MAC addresses in a row"
                        " were already taken; retry"
                    ) from None
                mac, mac_draws = _draw_mac(), mac_draws + 1  # another interface holds it
                continue
            return convert.network_interface(created)
        raise Aborted(f"{subnet_name}: addresses kept being taken concurrently; retry")

    async def _free_ip(self, subnet: Subnet, skip: set[str]) -> str:
        """The lowest unclaimed host address of *subnet* (its first
        ``_RESERVED_HOSTS`` are the gateway's and the card's); the create
        txn claims it atomically, so a lost race only costs another try."""
        taken = await self.store.addresses_in_use(subnet.name) | skip
        net = ipaddress.ip_network(subnet.cidr)
        for i, addr in enumerate(net.hosts()):
            if i >= _RESERVED_HOSTS and str(addr) not in taken:
                return str(addr)
        raise ResourceExhausted(f"{subnet.name}: no free addresses in {subnet.cidr}")

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
        nic = await self.store.get(NetworkInterface, name)
        _check_etag(name, etag, nic.etag)
        return nic

    @unary(SERVICE)
    async def AttachNetworkInterface(
        self, request: tenant_pb2.AttachNetworkInterfaceRequest, context: Context
    ) -> common_pb2.NetworkInterface:
        tenant = await self.tenant_of(context)
        inst_name = str(validate.owned(request.instance, "instance", "instances", tenant))
        name = str(validate.owned(request.name, "name", "networkInterfaces", tenant))

        async def attempt() -> common_pb2.NetworkInterface:
            nic = await self._nic(tenant, request.name, request.etag)
            inst = await self.ref(Instance, inst_name, "instance")
            if nic.instance == inst.name:
                return convert.network_interface(nic)
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
            new_nic, _ = await self.store.update_many(pair)
            return convert.network_interface(new_nic)

        return await self.retry_races(attempt, guarded=name if request.etag else "")

    @unary(SERVICE)
    async def DetachNetworkInterface(
        self, request: tenant_pb2.DetachNetworkInterfaceRequest, context: Context
    ) -> common_pb2.NetworkInterface:
        tenant = await self.tenant_of(context)
        name = str(validate.owned(request.name, "name", "networkInterfaces", tenant))

        async def attempt() -> common_pb2.NetworkInterface:
            nic = await self._nic(tenant, request.name, request.etag)
            if not nic.instance:
                return convert.network_interface(nic)
            detached = dataclasses.replace(nic, instance="")
            try:
                inst = await self.store.get(Instance, nic.instance)
            except NotFound:
                return convert.network_interface(await self.store.update(detached))
            remaining = tuple(n for n in inst.network_interfaces if n != nic.name)
            pair: list[Any] = [detached, dataclasses.replace(inst, network_interfaces=remaining)]
            new_nic, _ = await self.store.update_many(pair)
            return convert.network_interface(new_nic)

        return await self.retry_races(attempt, guarded=name if request.etag else "")

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
