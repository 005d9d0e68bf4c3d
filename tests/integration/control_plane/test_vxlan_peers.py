"""VXLAN peers in the desired state, through the real agent protocol: each
host's DesiredNic lists the underlay addresses of the OTHER hosts with a
live instance in the same VPC, and a peer appearing or going away reaches
the existing peers' streams through the agent hub -- the control plane here
resyncs only every 60 s, so anything sooner came from a watch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import grpc
import pytest_asyncio

from bmaas.v1 import agent_pb2, common_pb2, operator_pb2, tenant_pb2
from tools.region.control_plane import InProcessControlPlane, bearer
from tools.region.etcd import EtcdServer
from tools.region.world import World

#: a peer change must reach the streams well before a resync would
PROMPT = 2.0
UNDERLAY = {"hosts/h0": "192.0.2.10", "hosts/h1": "192.0.2.11"}


@pytest_asyncio.fixture(loop_scope="session")
async def cp(etcd: EtcdServer) -> AsyncIterator[InProcessControlPlane]:
    """Overrides the package's ``cp``: no periodic resync within a test."""
    async with InProcessControlPlane(etcd, desired_resync=60.0, allow_fake_power=True) as plane:
        yield plane


Peers = dict[str, list[str]]  # network interface -> peer underlay addresses


def nic_peers(desired: agent_pb2.DesiredState) -> Peers:
    return {
        nic.network_interface: list(nic.peer_underlay_addresses)
        for inst in desired.instances
        for nic in inst.nics
    }


async def until(
    call: grpc.aio.StreamStreamCall, want: Callable[[Peers], bool], timeout: float
) -> Peers:
    """Read desired states from *call* until one's NIC peers satisfy *want*."""
    deadline = time.monotonic() + timeout
    seen: Peers = {}
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await asyncio.wait_for(call.read(), left)
        except TimeoutError:
            break
        assert msg is not grpc.aio.EOF, "stream ended"
        seen = nic_peers(msg.desired_state)
        if want(seen):
            return seen
    raise AssertionError(f"no desired state matched within {timeout}s (last NICs: {seen})")


async def _launch(w: World, subnet: str) -> tuple[common_pb2.Instance, common_pb2.NetworkInterface]:
    """An instance created in *subnet*, and the primary interface made with it."""
    c = w.clients
    inst = await c.tenant.CreateInstance(
        tenant_pb2.CreateInstanceRequest(
            instance=common_pb2.Instance(
                instance_type=w.instance_type, image=w.image, subnet=subnet
            )
        ),
        metadata=w.md,
    )
    (name,) = inst.network_interfaces
    nic = await c.tenant.GetNetworkInterface(tenant_pb2.GetRequest(name=name), metadata=w.md)
    return inst, nic


async def test_each_host_learns_the_other_hosts_of_its_vpc(world: World) -> None:
    w, c = world, world.clients
    for host, address in UNDERLAY.items():
        reg = await c.agent.Register(
            agent_pb2.RegisterRequest(host=host, agent_version="test", underlay_address=address),
            metadata=bearer(w.hosts[host]),
        )
        assert reg.host.state == common_pb2.HOST_STATE_AVAILABLE
    for host in w.hosts:
        if host not in UNDERLAY:  # keep the instances on h0 and h1
            await c.operator.CordonHost(operator_pb2.HostActionRequest(name=host), metadata=c.op_md)
    vpc = await c.tenant.CreateVpc(
        tenant_pb2.CreateVpcRequest(vpc=common_pb2.Vpc(cidr="10.0.0.0/16")), metadata=w.md
    )
    subnet = await c.tenant.CreateSubnet(
        tenant_pb2.CreateSubnetRequest(
            parent=vpc.name, subnet=common_pb2.Subnet(cidr="10.0.1.0/24", zone="z1")
        ),
        metadata=w.md,
    )
    streams = {h: c.agent.Connect(metadata=bearer(w.hosts[h])) for h in UNDERLAY}
    try:
        for call in streams.values():
            await until(call, lambda p: p == {}, timeout=5)

        async def launch() -> tuple[common_pb2.Instance, common_pb2.NetworkInterface]:
            return await _launch(w, subnet.name)

        a, nic_a = await launch()
        # alone in its VPC: the NIC is there, with no peers
        await until(streams[a.host], lambda p: p == {nic_a.name: []}, PROMPT)
        b, nic_b = await launch()
        assert {a.host, b.host} == set(UNDERLAY)
        # the new instance reaches the existing peer at once, and the other way round
        await until(streams[a.host], lambda p: p == {nic_a.name: [UNDERLAY[b.host]]}, PROMPT)
        await until(streams[b.host], lambda p: p == {nic_b.name: [UNDERLAY[a.host]]}, PROMPT)

        # a second NIC of b in the same VPC: still one peer address for a (deduplicated)
        extra = await c.tenant.CreateNetworkInterface(
            tenant_pb2.CreateNetworkInterfaceRequest(
                network_interface=common_pb2.NetworkInterface(subnet=subnet.name)
            ),
            metadata=w.md,
        )
        await c.tenant.AttachNetworkInterface(
            tenant_pb2.AttachNetworkInterfaceRequest(name=extra.name, instance=b.name),
            metadata=w.md,
        )
        both = {nic_b.name: [UNDERLAY[a.host]], extra.name: [UNDERLAY[a.host]]}
        await until(streams[b.host], lambda p: p == both, PROMPT)

        # terminating b takes it out of a's peers
        await c.tenant.TerminateInstance(
            tenant_pb2.InstanceActionRequest(name=b.name), metadata=w.md
        )
        await until(streams[a.host], lambda p: p == {nic_a.name: []}, PROMPT)
    finally:
        for call in streams.values():
            call.cancel()


Directory = dict[str, set[tuple[str, str, str, str]]]  # NIC -> (ip, mac, subnet, underlay)


def nic_directory(desired: agent_pb2.DesiredState) -> Directory:
    return {
        nic.network_interface: {
            (n.private_ip, n.mac_address, n.subnet_cidr, n.underlay_address) for n in nic.neighbors
        }
        for inst in desired.instances
        for nic in inst.nics
    }


async def until_directory(
    call: grpc.aio.StreamStreamCall, want: Callable[[Directory], bool], timeout: float
) -> Directory:
    deadline = time.monotonic() + timeout
    seen: Directory = {}
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await asyncio.wait_for(call.read(), left)
        except TimeoutError:
            break
        assert msg is not grpc.aio.EOF, "stream ended"
        seen = nic_directory(msg.desired_state)
        if want(seen):
            return seen
    raise AssertionError(f"no desired state matched within {timeout}s (last: {seen})")


async def test_each_nic_gets_the_directory_of_its_vpc_across_subnets(world: World) -> None:
    """Two subnets of one VPC on two hosts: each NIC's directory lists both
    interfaces (address, MAC, subnet, host); another VPC is never in it; an
    instance going away leaves it at once."""
    w, c = world, world.clients
    for host, address in UNDERLAY.items():
        await c.agent.Register(
            agent_pb2.RegisterRequest(host=host, agent_version="test", underlay_address=address),
            metadata=bearer(w.hosts[host]),
        )
    for host in w.hosts:
        if host not in UNDERLAY:
            await c.operator.CordonHost(operator_pb2.HostActionRequest(name=host), metadata=c.op_md)
    vpc = await c.tenant.CreateVpc(
        tenant_pb2.CreateVpcRequest(vpc=common_pb2.Vpc(cidr="10.0.0.0/16")), metadata=w.md
    )
    other_vpc = await c.tenant.CreateVpc(
        tenant_pb2.CreateVpcRequest(vpc=common_pb2.Vpc(cidr="10.0.0.0/16")), metadata=w.md
    )
    subnets = [
        await c.tenant.CreateSubnet(
            tenant_pb2.CreateSubnetRequest(
                parent=parent, subnet=common_pb2.Subnet(cidr=cidr, zone="z1")
            ),
            metadata=w.md,
        )
        for parent, cidr in (
            (vpc.name, "10.0.1.0/24"),
            (vpc.name, "10.0.2.0/24"),
            (other_vpc.name, "10.0.1.0/24"),
        )
    ]
    # an interface of the other VPC, attached to nothing running here: never listed
    await c.tenant.CreateNetworkInterface(
        tenant_pb2.CreateNetworkInterfaceRequest(
            network_interface=common_pb2.NetworkInterface(subnet=subnets[2].name)
        ),
        metadata=w.md,
    )
    streams = {h: c.agent.Connect(metadata=bearer(w.hosts[h])) for h in UNDERLAY}
    try:
        launched = []
        for subnet in subnets[:2]:
            inst, nic = await _launch(w, subnet.name)
            launched.append((inst, nic, subnet))
        entries = {
            (nic.private_ip, nic.mac_address, subnet.cidr, UNDERLAY[inst.host])
            for inst, nic, subnet in launched
        }
        assert len({inst.host for inst, _, _ in launched}) == 2
        for inst, nic, _ in launched:
            await until_directory(streams[inst.host], lambda d, n=nic: d == {n.name: entries}, 5)
        # b goes: a's directory has only a left
        (a, nic_a, sub_a), (b, _, _) = launched
        await c.tenant.TerminateInstance(
            tenant_pb2.InstanceActionRequest(name=b.name), metadata=w.md
        )
        alone = {(nic_a.private_ip, nic_a.mac_address, sub_a.cidr, UNDERLAY[a.host])}
        await until_directory(streams[a.host], lambda d: d == {nic_a.name: alone}, PROMPT)
    finally:
        for call in streams.values():
            call.cancel()
