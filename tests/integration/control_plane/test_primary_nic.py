"""CreateInstance with a subnet makes the primary network interface with the
instance (real etcd, controllers, agents on the fake power driver): listed
from the instance's first write, replayed by a retried request, deleted with
the instance unless detached first, and deleted again when the create is
refused."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from bmaas.v1 import common_pb2, tenant_pb2
from tools.region.agents import running_agents
from tools.region.control_plane import Clients, InProcessControlPlane
from tools.region.wait import wait_for
from tools.region.world import World, build_world

IS = common_pb2.InstanceState


@pytest_asyncio.fixture(loop_scope="session")
async def live_world(cp_ctl: InProcessControlPlane, tmp_path: Path) -> AsyncIterator[World]:
    """Controllers, and a real agent (fake power driver) on every host."""
    async with Clients(cp_ctl.port) as c:
        world = await build_world(c, hosts=2)
        async with running_agents(port=c.port, hosts=world.hosts, state_root=tmp_path):
            yield world


async def _subnet(w: World) -> common_pb2.Subnet:
    c = w.clients
    vpc = await c.tenant.CreateVpc(
        tenant_pb2.CreateVpcRequest(vpc=common_pb2.Vpc(cidr="10.0.0.0/16")), metadata=w.md
    )
    return await c.tenant.CreateSubnet(
        tenant_pb2.CreateSubnetRequest(
            parent=vpc.name, subnet=common_pb2.Subnet(cidr="10.0.1.0/24", zone="z1")
        ),
        metadata=w.md,
    )


def _create(w: World, subnet: str, rid: str = "") -> tenant_pb2.CreateInstanceRequest:
    return tenant_pb2.CreateInstanceRequest(
        request_id=rid,
        instance=common_pb2.Instance(instance_type=w.instance_type, image=w.image, subnet=subnet),
    )


async def _nics(w: World) -> list[common_pb2.NetworkInterface]:
    got = await w.clients.tenant.ListNetworkInterfaces(tenant_pb2.ListRequest(), metadata=w.md)
    return list(got.network_interfaces)


async def test_the_primary_interface_lives_and_dies_with_its_instance(live_world: World) -> None:
    w, c = live_world, live_world.clients
    subnet = await _subnet(w)
    inst = await c.tenant.CreateInstance(_create(w, subnet.name, "p-1"), metadata=w.md)
    (nic_name,) = inst.network_interfaces
    assert nic_name == f"{w.tenant}/networkInterfaces/{inst.name.rsplit('/', 1)[1]}-eth0"
    nic = await c.tenant.GetNetworkInterface(tenant_pb2.GetRequest(name=nic_name), metadata=w.md)
    assert nic.instance == inst.name and nic.delete_on_termination and nic.mac_address
    assert ipaddress.ip_address(nic.private_ip) in ipaddress.ip_network(subnet.cidr)
    # a retried request: the same instance and interface, nothing more
    again = await c.tenant.CreateInstance(_create(w, subnet.name, "p-1"), metadata=w.md)
    assert again.name == inst.name and list(again.network_interfaces) == [nic_name]
    assert [n.name for n in await _nics(w)] == [nic_name]

    # a second one, whose interface is detached first: it outlives its instance
    other = await c.tenant.CreateInstance(_create(w, subnet.name), metadata=w.md)
    (kept_name,) = other.network_interfaces
    kept = await c.tenant.DetachNetworkInterface(
        tenant_pb2.DetachNetworkInterfaceRequest(name=kept_name), metadata=w.md
    )
    assert not kept.instance and not kept.delete_on_termination

    for name in (inst.name, other.name):
        await c.tenant.TerminateInstance(tenant_pb2.InstanceActionRequest(name=name), metadata=w.md)

    async def terminated() -> bool:
        for name in (inst.name, other.name):
            got = await c.tenant.GetInstance(tenant_pb2.GetRequest(name=name), metadata=w.md)
            if got.state != IS.INSTANCE_STATE_TERMINATED:
                return False
        return True

    await wait_for(terminated, timeout=20)

    async def only_the_detached_one_left() -> bool:
        return [n.name for n in await _nics(w)] == [kept_name]

    await wait_for(only_the_detached_one_left, timeout=10)


async def test_a_refused_create_deletes_its_primary_interface(world: World) -> None:
    w, c = world, world.clients
    subnet = await _subnet(w)
    made = [await c.tenant.CreateInstance(_create(w, subnet.name), metadata=w.md) for _ in range(3)]
    assert len({i.host for i in made}) == 3 and len(await _nics(w)) == 3
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await c.tenant.CreateInstance(_create(w, subnet.name), metadata=w.md)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(await _nics(w)) == 3  # the refused create's interface is gone again
    addresses = {n.private_ip for n in await _nics(w)}
    assert len(addresses) == 3
