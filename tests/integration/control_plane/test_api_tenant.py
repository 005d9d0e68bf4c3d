"""TenantService contract tests through the generated client, against a
real etcd: every RPC, paging, filters, idempotent retries with request_id,
etag conflicts (ABORTED) and tenant isolation (NOT_FOUND)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from bmaas.v1 import common_pb2, operator_pb2, tenant_pb2
from tools.region.agents import running_agents
from tools.region.control_plane import Clients, InProcessControlPlane, bearer
from tools.region.wait import wait_for
from tools.region.world import World, build_world, make_tenant

IS = common_pb2.InstanceState


def create_req(world: World, **kw: object) -> tenant_pb2.CreateInstanceRequest:
    rid = str(kw.pop("request_id", ""))
    inst = common_pb2.Instance(instance_type=world.instance_type, image=world.image, **kw)  # type: ignore[arg-type]
    return tenant_pb2.CreateInstanceRequest(request_id=rid, instance=inst)


async def expect(code: grpc.StatusCode, coro: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await coro  # type: ignore[misc]
    assert exc.value.code() == code, exc.value.details()
    return exc.value


@pytest_asyncio.fixture(loop_scope="session")
async def live_world(cp_ctl: InProcessControlPlane, tmp_path: Path) -> AsyncIterator[World]:
    """Controllers, and a real agent (fake power driver) on every host."""
    async with Clients(cp_ctl.port) as c:
        world = await build_world(c, hosts=2)
        async with running_agents(port=c.port, hosts=world.hosts, state_root=tmp_path):
            yield world


async def test_instance_lifecycle_through_every_action(live_world: World) -> None:
    w, c = live_world, live_world.clients
    data = await c.tenant.CreateVolume(
        tenant_pb2.CreateVolumeRequest(volume=common_pb2.Volume(size_gib=3)), metadata=w.md
    )
    inst = await c.tenant.CreateInstance(
        create_req(
            w, request_id="life-1", ssh_keys=["ssh-ed25519 AAAAC3Nz test@x"], volumes=[data.name]
        ),
        metadata=w.md,
    )
    assert inst.name.startswith("tenants/acme/instances/i-")
    assert inst.state == IS.INSTANCE_STATE_SCHEDULED and inst.host in w.hosts

    async def state_is(state: int) -> common_pb2.Instance | None:
        got = await c.tenant.GetInstance(tenant_pb2.GetRequest(name=inst.name), metadata=w.md)
        return got if got.state == state else None

    running = await wait_for(lambda: state_is(IS.INSTANCE_STATE_RUNNING), timeout=15)
    stopping = await c.tenant.StopInstance(
        tenant_pb2.InstanceActionRequest(name=inst.name, etag=running.etag), metadata=w.md
    )
    assert stopping.state in (IS.INSTANCE_STATE_STOPPING, IS.INSTANCE_STATE_STOPPED)
    # A stale etag is refused, the same action again is a no-op.
    await expect(
        grpc.StatusCode.ABORTED,
        c.tenant.StartInstance(
            tenant_pb2.InstanceActionRequest(name=inst.name, etag=running.etag), metadata=w.md
        ),
    )
    again = await c.tenant.StopInstance(
        tenant_pb2.InstanceActionRequest(name=inst.name), metadata=w.md
    )
    assert again.state in (IS.INSTANCE_STATE_STOPPING, IS.INSTANCE_STATE_STOPPED)
    await wait_for(lambda: state_is(IS.INSTANCE_STATE_STOPPED), timeout=15)
    await expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        c.tenant.RebootInstance(tenant_pb2.InstanceActionRequest(name=inst.name), metadata=w.md),
    )
    started = await c.tenant.StartInstance(
        tenant_pb2.InstanceActionRequest(name=inst.name), metadata=w.md
    )
    assert started.target_state == IS.INSTANCE_STATE_RUNNING
    await wait_for(lambda: state_is(IS.INSTANCE_STATE_RUNNING), timeout=15)
    rebooting = await c.tenant.RebootInstance(
        tenant_pb2.InstanceActionRequest(name=inst.name), metadata=w.md
    )
    assert rebooting.state in (IS.INSTANCE_STATE_REBOOTING, IS.INSTANCE_STATE_RUNNING)
    await wait_for(lambda: state_is(IS.INSTANCE_STATE_RUNNING), timeout=15)
    # the agent's console tail: its fake server powered on twice and was reset once
    instance_id = inst.name.rsplit("/", 1)[1].encode()

    async def console_shows_every_action() -> bytes:
        got = await c.tenant.GetConsoleOutput(
            tenant_pb2.GetConsoleOutputRequest(name=inst.name, max_bytes=4096), metadata=w.md
        )
        out = got.output
        assert len(out) <= 4096
        return out if out.count(b"power on " + instance_id) == 2 and b"reset" in out else b""

    await wait_for(console_shows_every_action, timeout=10)
    term = await c.tenant.TerminateInstance(
        tenant_pb2.InstanceActionRequest(name=inst.name), metadata=w.md
    )
    assert term.target_state == IS.INSTANCE_STATE_TERMINATED
    await wait_for(lambda: state_is(IS.INSTANCE_STATE_TERMINATED), timeout=15)
    # Termination frees the data volume: it can be detached and deleted.
    freed = await c.tenant.DetachVolume(
        tenant_pb2.DetachVolumeRequest(name=data.name), metadata=w.md
    )
    assert not freed.instance and freed.state == common_pb2.VOLUME_STATE_AVAILABLE
    await c.tenant.DeleteVolume(tenant_pb2.DeleteRequest(name=data.name), metadata=w.md)

    # The host is released, wiped by its agent, and can be handed out again.
    async def cleaned() -> common_pb2.Host | None:
        host = await c.operator.GetHost(tenant_pb2.GetRequest(name=inst.host), metadata=c.op_md)
        return host if host.state == common_pb2.HOST_STATE_AVAILABLE else None

    host = await wait_for(cleaned, timeout=15)
    # epoch 1 was the wipe at its registration, 2 the one after this tenant
    assert not host.instance and host.cleaning_epoch == 2


async def test_create_is_idempotent_on_request_id_and_checks_quota(world: World) -> None:
    w, c = world, world.clients
    first = await c.tenant.CreateInstance(create_req(w, request_id="same"), metadata=w.md)
    retry = await c.tenant.CreateInstance(create_req(w, request_id="same"), metadata=w.md)
    assert retry.name == first.name and retry.host == first.host
    listed = await c.tenant.ListInstances(tenant_pb2.ListRequest(), metadata=w.md)
    assert [i.name for i in listed.instances] == [first.name]
    # Same request id, different request: refused, nothing created.
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        c.tenant.CreateInstance(create_req(w, request_id="same", zone="z1"), metadata=w.md),
    )
    t = await c.operator.GetTenant(tenant_pb2.GetRequest(name=w.tenant), metadata=c.op_md)
    assert t.usage.instances == 1
    await c.operator.SetTenantQuota(
        operator_pb2.SetTenantQuotaRequest(
            tenant=w.tenant, quota=common_pb2.Quota(max_instances=1, max_volume_gib=100)
        ),
        metadata=c.op_md,
    )
    err = await expect(
        grpc.StatusCode.RESOURCE_EXHAUSTED, c.tenant.CreateInstance(create_req(w), metadata=w.md)
    )
    assert "quota" in (err.details() or "")


async def test_no_capacity_leaves_nothing_behind(world: World) -> None:
    w, c = world, world.clients
    made = [await c.tenant.CreateInstance(create_req(w), metadata=w.md) for _ in range(3)]
    assert len({i.host for i in made}) == 3
    err = await expect(
        grpc.StatusCode.RESOURCE_EXHAUSTED, c.tenant.CreateInstance(create_req(w), metadata=w.md)
    )
    assert "no AVAILABLE host" in (err.details() or "") or "capacity" in (err.details() or "")
    listed = await c.tenant.ListInstances(tenant_pb2.ListRequest(), metadata=w.md)
    assert len(listed.instances) == 3
    t = await c.operator.GetTenant(tenant_pb2.GetRequest(name=w.tenant), metadata=c.op_md)
    assert t.usage.instances == 3


async def test_list_instances_pages_and_filters(world: World) -> None:
    w, c = world, world.clients
    made = [await c.tenant.CreateInstance(create_req(w), metadata=w.md) for _ in range(3)]
    token, names, pages = "", [], 0
    while True:
        page = await c.tenant.ListInstances(
            tenant_pb2.ListRequest(page_size=2, page_token=token), metadata=w.md
        )
        names += [i.name for i in page.instances]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 2 and sorted(names) == sorted(i.name for i in made)
    one = await c.tenant.ListInstances(
        tenant_pb2.ListRequest(filter=f'host="{made[1].host}"'), metadata=w.md
    )
    assert [i.name for i in one.instances] == [made[1].name]
    none = await c.tenant.ListInstances(
        tenant_pb2.ListRequest(filter="state=RUNNING"), metadata=w.md
    )
    assert list(none.instances) == []
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        c.tenant.ListInstances(
            tenant_pb2.ListRequest(page_size=2, page_token=token or "bogus"), metadata=w.md
        ),
    )


async def test_tenants_are_isolated(world: World) -> None:
    w, c = world, world.clients
    inst = await c.tenant.CreateInstance(create_req(w), metadata=w.md)
    vol = await c.tenant.CreateVolume(
        tenant_pb2.CreateVolumeRequest(volume=common_pb2.Volume(size_gib=10)), metadata=w.md
    )
    _, other = await make_tenant(c, "evil")
    md = bearer(other)
    for call in (
        c.tenant.GetInstance(tenant_pb2.GetRequest(name=inst.name), metadata=md),
        c.tenant.TerminateInstance(tenant_pb2.InstanceActionRequest(name=inst.name), metadata=md),
        c.tenant.GetVolume(tenant_pb2.GetRequest(name=vol.name), metadata=md),
        c.tenant.DeleteVolume(tenant_pb2.DeleteRequest(name=vol.name), metadata=md),
        c.tenant.GetInstance(
            tenant_pb2.GetRequest(name="tenants/acme/instances/i-nope"), metadata=md
        ),
    ):
        err = await expect(grpc.StatusCode.NOT_FOUND, call)
        assert "permission" not in (err.details() or "").lower()
    mine = await c.tenant.ListInstances(tenant_pb2.ListRequest(), metadata=md)
    assert list(mine.instances) == []
    still = await c.tenant.GetInstance(tenant_pb2.GetRequest(name=inst.name), metadata=w.md)
    assert still.state == IS.INSTANCE_STATE_SCHEDULED
    await expect(
        grpc.StatusCode.UNAUTHENTICATED,
        c.tenant.ListInstances(tenant_pb2.ListRequest(), metadata=bearer(other + "x")),
    )


async def test_volumes_create_attach_resize_detach_delete(world: World) -> None:
    w, c = world, world.clients
    vol = await c.tenant.CreateVolume(
        tenant_pb2.CreateVolumeRequest(
            request_id="v1", volume=common_pb2.Volume(size_gib=20, image=w.image)
        ),
        metadata=w.md,
    )
    again = await c.tenant.CreateVolume(
        tenant_pb2.CreateVolumeRequest(
            request_id="v1", volume=common_pb2.Volume(size_gib=20, image=w.image)
        ),
        metadata=w.md,
    )
    assert again.name == vol.name and vol.state == common_pb2.VOLUME_STATE_AVAILABLE
    extra = await c.tenant.CreateVolume(
        tenant_pb2.CreateVolumeRequest(volume=common_pb2.Volume(size_gib=5)), metadata=w.md
    )
    page = await c.tenant.ListVolumes(tenant_pb2.ListRequest(page_size=1), metadata=w.md)
    assert len(page.volumes) == 1 and page.next_page_token
    inst = await c.tenant.CreateInstance(create_req(w, volumes=[extra.name]), metadata=w.md)
    assert list(inst.volumes) == [extra.name]
    in_use = await c.tenant.GetVolume(tenant_pb2.GetRequest(name=extra.name), metadata=w.md)
    assert in_use.instance == inst.name and in_use.state == common_pb2.VOLUME_STATE_IN_USE
    attached = await c.tenant.AttachVolume(
        tenant_pb2.AttachVolumeRequest(name=vol.name, instance=inst.name, etag=vol.etag),
        metadata=w.md,
    )
    assert attached.instance == inst.name
    await expect(
        grpc.StatusCode.ABORTED,
        c.tenant.ResizeVolume(
            tenant_pb2.ResizeVolumeRequest(name=vol.name, size_gib=30, etag=vol.etag),
            metadata=w.md,
        ),
    )
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        c.tenant.ResizeVolume(
            tenant_pb2.ResizeVolumeRequest(name=vol.name, size_gib=10), metadata=w.md
        ),
    )
    grown = await c.tenant.ResizeVolume(
        tenant_pb2.ResizeVolumeRequest(name=vol.name, size_gib=40, etag=attached.etag),
        metadata=w.md,
    )
    assert grown.size_gib == 40
    await expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        c.tenant.DeleteVolume(tenant_pb2.DeleteRequest(name=vol.name), metadata=w.md),
    )
    got = await c.tenant.GetInstance(tenant_pb2.GetRequest(name=inst.name), metadata=w.md)
    assert list(got.volumes) == [extra.name, vol.name]
    detached = await c.tenant.DetachVolume(
        tenant_pb2.DetachVolumeRequest(name=vol.name), metadata=w.md
    )
    assert not detached.instance
    got = await c.tenant.GetInstance(tenant_pb2.GetRequest(name=inst.name), metadata=w.md)
    assert list(got.volumes) == [extra.name]
    await c.tenant.DeleteVolume(tenant_pb2.DeleteRequest(name=vol.name), metadata=w.md)
    await expect(
        grpc.StatusCode.NOT_FOUND,
        c.tenant.GetVolume(tenant_pb2.GetRequest(name=vol.name), metadata=w.md),
    )
    t = await c.operator.GetTenant(tenant_pb2.GetRequest(name=w.tenant), metadata=c.op_md)
    assert t.usage.volume_gib == 5


async def test_vpcs_subnets_and_network_interfaces(world: World) -> None:
    w, c = world, world.clients
    vpc = await c.tenant.CreateVpc(
        tenant_pb2.CreateVpcRequest(request_id="vpc-1", vpc=common_pb2.Vpc(cidr="10.0.0.0/16")),
        metadata=w.md,
    )
    again = await c.tenant.CreateVpc(
        tenant_pb2.CreateVpcRequest(request_id="vpc-1", vpc=common_pb2.Vpc(cidr="10.0.0.0/16")),
        metadata=w.md,
    )
    assert again.name == vpc.name and 0 < vpc.vni < 2**24
    assert (await c.tenant.GetVpc(tenant_pb2.GetRequest(name=vpc.name), metadata=w.md)).cidr == (
        "10.0.0.0/16"
    )
    subnet = await c.tenant.CreateSubnet(
        tenant_pb2.CreateSubnetRequest(
            parent=vpc.name, subnet=common_pb2.Subnet(cidr="10.0.1.0/24", zone="z1")
        ),
        metadata=w.md,
    )
    assert subnet.name.startswith(vpc.name + "/subnets/")
    await expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        c.tenant.CreateSubnet(
            tenant_pb2.CreateSubnetRequest(
                parent=vpc.name, subnet=common_pb2.Subnet(cidr="10.0.1.128/25")
            ),
            metadata=w.md,
        ),
    )
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        c.tenant.CreateSubnet(
            tenant_pb2.CreateSubnetRequest(
                parent=vpc.name, subnet=common_pb2.Subnet(cidr="192.168.0.0/24")
            ),
            metadata=w.md,
        ),
    )
    got_subnet = await c.tenant.GetSubnet(tenant_pb2.GetRequest(name=subnet.name), metadata=w.md)
    assert got_subnet.zone == "z1"
    subnets = await c.tenant.ListSubnets(tenant_pb2.ListRequest(), metadata=w.md)
    assert [s.name for s in subnets.subnets] == [subnet.name]
    vpcs = await c.tenant.ListVpcs(tenant_pb2.ListRequest(), metadata=w.md)
    assert [v.name for v in vpcs.vpcs] == [vpc.name]
    nic = await c.tenant.CreateNetworkInterface(
        tenant_pb2.CreateNetworkInterfaceRequest(
            network_interface=common_pb2.NetworkInterface(subnet=subnet.name)
        ),
        metadata=w.md,
    )
    nic2 = await c.tenant.CreateNetworkInterface(
        tenant_pb2.CreateNetworkInterfaceRequest(
            network_interface=common_pb2.NetworkInterface(subnet=subnet.name)
        ),
        metadata=w.md,
    )
    assert nic.private_ip == "10.0.1.4" and nic2.private_ip == "10.0.1.5"
    assert nic.mac_address.startswith("02:")
    inst = await c.tenant.CreateInstance(create_req(w, subnet=subnet.name), metadata=w.md)
    assert inst.zone == "z1"
    att = await c.tenant.AttachNetworkInterface(
        tenant_pb2.AttachNetworkInterfaceRequest(name=nic.name, instance=inst.name, etag=nic.etag),
        metadata=w.md,
    )
    assert att.instance == inst.name
    got = await c.tenant.GetInstance(tenant_pb2.GetRequest(name=inst.name), metadata=w.md)
    # created with a subnet: its primary interface first, then the attached one
    (primary,) = inst.network_interfaces
    assert list(got.network_interfaces) == [primary, nic.name]
    await expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        c.tenant.DeleteNetworkInterface(tenant_pb2.DeleteRequest(name=nic.name), metadata=w.md),
    )
    det = await c.tenant.DetachNetworkInterface(
        tenant_pb2.DetachNetworkInterfaceRequest(name=nic.name), metadata=w.md
    )
    assert not det.instance
    listed = await c.tenant.ListNetworkInterfaces(
        tenant_pb2.ListRequest(filter=f'private_ip="{nic2.private_ip}"'), metadata=w.md
    )
    assert [n.name for n in listed.network_interfaces] == [nic2.name]
    got_nic = await c.tenant.GetNetworkInterface(
        tenant_pb2.GetRequest(name=nic.name), metadata=w.md
    )
    assert got_nic.private_ip == nic.private_ip
    for n in (nic, nic2):
        await c.tenant.DeleteNetworkInterface(tenant_pb2.DeleteRequest(name=n.name), metadata=w.md)
    await expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        c.tenant.DeleteSubnet(tenant_pb2.DeleteRequest(name=subnet.name), metadata=w.md),
    )
    await c.tenant.TerminateInstance(
        tenant_pb2.InstanceActionRequest(name=inst.name), metadata=w.md
    )
    await expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        c.tenant.DeleteVpc(tenant_pb2.DeleteRequest(name=vpc.name), metadata=w.md),
    )


async def test_placement_groups_spread_racks(world: World) -> None:
    w, c = world, world.clients
    group = await c.tenant.CreatePlacementGroup(
        tenant_pb2.CreatePlacementGroupRequest(
            request_id="pg-1", placement_group=common_pb2.PlacementGroup()
        ),
        metadata=w.md,
    )
    assert group.strategy == common_pb2.PLACEMENT_STRATEGY_SPREAD_RACKS
    got = await c.tenant.GetPlacementGroup(tenant_pb2.GetRequest(name=group.name), metadata=w.md)
    assert got.name == group.name
    listed = await c.tenant.ListPlacementGroups(tenant_pb2.ListRequest(), metadata=w.md)
    assert [g.name for g in listed.placement_groups] == [group.name]
    # world hosts: h0, h2 in rack r0 and h1 in r1 -> only two members fit.
    a = await c.tenant.CreateInstance(create_req(w, placement_group=group.name), metadata=w.md)
    b = await c.tenant.CreateInstance(create_req(w, placement_group=group.name), metadata=w.md)
    racks = set()
    for inst in (a, b):
        host = await c.operator.GetHost(tenant_pb2.GetRequest(name=inst.host), metadata=c.op_md)
        racks.add(host.rack)
    assert racks == {"r0", "r1"}
    await expect(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        c.tenant.CreateInstance(create_req(w, placement_group=group.name), metadata=w.md),
    )
    await expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        c.tenant.DeletePlacementGroup(tenant_pb2.DeleteRequest(name=group.name), metadata=w.md),
    )


async def test_catalogue_is_readable_by_tenants(world: World) -> None:
    w, c = world, world.clients
    images = await c.tenant.ListImages(tenant_pb2.ListRequest(), metadata=w.md)
    assert [i.name for i in images.images] == [w.image]
    types = await c.tenant.ListInstanceTypes(tenant_pb2.ListRequest(), metadata=w.md)
    assert [t.name for t in types.instance_types] == [w.instance_type]
    await expect(
        grpc.StatusCode.UNAUTHENTICATED,
        c.tenant.ListImages(tenant_pb2.ListRequest(), metadata=c.op_md),
    )


async def test_concurrent_retries_of_one_request_create_one_instance(world: World) -> None:
    w, c = world, world.clients
    name = f"{w.tenant}/instances/web-1"
    results = await asyncio.gather(
        *(
            c.tenant.CreateInstance(create_req(w, request_id="dup", name=name), metadata=w.md)
            for _ in range(6)
        )
    )
    assert {r.name for r in results} == {name}
    listed = await c.tenant.ListInstances(tenant_pb2.ListRequest(), metadata=w.md)
    assert [i.name for i in listed.instances] == [name]
    got = await c.tenant.GetInstance(tenant_pb2.GetRequest(name=name), metadata=w.md)
    assert got.host and got.state == IS.INSTANCE_STATE_SCHEDULED


async def test_concurrent_network_interface_creates_get_distinct_addresses(world: World) -> None:
    c, w = world.clients, world
    vpc = await c.tenant.CreateVpc(
        tenant_pb2.CreateVpcRequest(vpc=common_pb2.Vpc(cidr="10.9.0.0/16")), metadata=w.md
    )
    subnet = await c.tenant.CreateSubnet(
        tenant_pb2.CreateSubnetRequest(
            parent=vpc.name, subnet=common_pb2.Subnet(cidr="10.9.1.0/27", zone="z1")
        ),
        metadata=w.md,
    )

    def create() -> object:
        return c.tenant.CreateNetworkInterface(
            tenant_pb2.CreateNetworkInterfaceRequest(
                network_interface=common_pb2.NetworkInterface(subnet=subnet.name)
            ),
            metadata=w.md,
        )

    # a /27 has 30 host addresses, 3 reserved: 27 fit, the rest must be refused
    results = await asyncio.gather(*(create() for _ in range(32)), return_exceptions=True)  # type: ignore[arg-type]
    nics = [r for r in results if isinstance(r, common_pb2.NetworkInterface)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(nics) == 27, [r for r in results if not isinstance(r, common_pb2.NetworkInterface)]
    assert len({n.private_ip for n in nics}) == 27
    assert {r.code() for r in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    # deleting one frees its address for the next create
    freed = nics[0]
    await c.tenant.DeleteNetworkInterface(tenant_pb2.DeleteRequest(name=freed.name), metadata=w.md)
    again = await create()
    assert again.private_ip == freed.private_ip  # type: ignore[attr-defined]


async def test_attach_and_detach_ride_out_the_controllers_moving_the_instance(
    live_world: World,
) -> None:
    """Without an etag, attaching while the controllers and the agent move the
    instance from SCHEDULED to RUNNING never answers ABORTED (the server
    retries its read-check-write); with a stale etag on the volume it does."""
    w, c = live_world, live_world.clients
    vol = await c.tenant.CreateVolume(
        tenant_pb2.CreateVolumeRequest(volume=common_pb2.Volume(size_gib=1)), metadata=w.md
    )
    inst = await c.tenant.CreateInstance(create_req(w), metadata=w.md)
    for _ in range(15):
        attached = await c.tenant.AttachVolume(
            tenant_pb2.AttachVolumeRequest(name=vol.name, instance=inst.name), metadata=w.md
        )
        assert attached.instance == inst.name
        detached = await c.tenant.DetachVolume(
            tenant_pb2.DetachVolumeRequest(name=vol.name), metadata=w.md
        )
        assert not detached.instance
    await expect(
        grpc.StatusCode.ABORTED,
        c.tenant.AttachVolume(
            tenant_pb2.AttachVolumeRequest(name=vol.name, instance=inst.name, etag=vol.etag),
            metadata=w.md,
        ),
    )
