"""Fixtures for the API contract tests: an in-process control plane on a
fresh etcd, generated-client stubs, and a small provisioned world (one
tenant with a token, an instance type, an image, registered hosts)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from pytest_asyncio import is_async_test

from bmaas.v1 import agent_pb2, agent_pb2_grpc, common_pb2, operator_pb2
from tests.harness.control_plane import Clients, InProcessControlPlane, bearer
from tests.harness.etcd import EtcdServer

_HERE = __file__.rsplit("/", 1)[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """grpc.aio binds its completion-queue poller to the first event loop it
    sees, so every gRPC test of this package runs on ONE session loop."""
    marker = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if is_async_test(item) and str(item.path).startswith(_HERE):
            item.add_marker(marker, append=False)


@pytest_asyncio.fixture(loop_scope="session")
async def cp(etcd: EtcdServer) -> AsyncIterator[InProcessControlPlane]:
    async with InProcessControlPlane(etcd) as plane:
        yield plane


@pytest_asyncio.fixture(loop_scope="session")
async def cp_ctl(etcd: EtcdServer) -> AsyncIterator[InProcessControlPlane]:
    """A control plane that also runs the (leader-elected) controllers."""
    async with InProcessControlPlane(etcd, controllers=True) as plane:
        yield plane


@pytest_asyncio.fixture(loop_scope="session")
async def clients(cp: InProcessControlPlane) -> AsyncIterator[Clients]:
    async with Clients(cp.port) as c:
        yield c


@dataclass
class World:
    clients: Clients
    tenant: str
    token: str
    instance_type: str
    image: str
    hosts: dict[str, str] = field(default_factory=dict)  # host name -> agent credential

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.token)

    @property
    def parent(self) -> str:
        return self.tenant


async def enroll(
    c: Clients,
    *,
    host_id: str,
    host_class: str = "c64",
    zone: str = "z1",
    rack: str = "r1",
    register: bool = True,
) -> tuple[common_pb2.Host, str]:
    resp = await c.operator.EnrollHost(
        operator_pb2.EnrollHostRequest(
            request_id=str(uuid.uuid4()),
            host=common_pb2.Host(
                name=f"hosts/{host_id}",
                zone=zone,
                rack=rack,
                host_class=host_class,
                hardware=common_pb2.HardwareProfile(
                    cpus=64,
                    memory_gib=256,
                    disks=[common_pb2.Disk(name="nvme0", size_gib=1920)],
                    nics=[common_pb2.Nic(name="eth0", speed_gbps=25)],
                ),
            ),
        ),
        metadata=c.op_md,
    )
    host = resp.host
    if register:
        stub: agent_pb2_grpc.AgentServiceStub = c.agent
        reg = await stub.Register(
            agent_pb2.RegisterRequest(host=host.name, agent_version="test"),
            metadata=bearer(resp.agent_credential),
        )
        host = reg.host
    return host, resp.agent_credential


async def make_tenant(c: Clients, tenant_id: str, *, max_instances: int = 100) -> tuple[str, str]:
    t = await c.operator.CreateTenant(
        operator_pb2.CreateTenantRequest(
            tenant=common_pb2.Tenant(
                name=f"tenants/{tenant_id}",
                quota=common_pb2.Quota(max_instances=max_instances, max_volume_gib=10_000),
            )
        ),
        metadata=c.op_md,
    )
    tok = await c.operator.IssueTenantToken(
        operator_pb2.IssueTenantTokenRequest(tenant=t.name), metadata=c.op_md
    )
    return t.name, tok.token


async def build_world(c: Clients, *, hosts: int = 3) -> World:
    tenant, token = await make_tenant(c, "acme")
    itype = await c.operator.CreateInstanceType(
        operator_pb2.CreateInstanceTypeRequest(
            instance_type=common_pb2.InstanceType(
                name="instanceTypes/bm-c64", host_class="c64", cpus=64, memory_gib=256
            )
        ),
        metadata=c.op_md,
    )
    image = await c.operator.RegisterImage(
        operator_pb2.RegisterImageRequest(
            image=common_pb2.Image(
                name="images/debian-12", os="debian-12", source_uri="file:///images/d12.raw"
            )
        ),
        metadata=c.op_md,
    )
    world = World(c, tenant, token, itype.name, image.name)
    for i in range(hosts):
        host, cred = await enroll(c, host_id=f"h{i}", rack=f"r{i % 2}")
        world.hosts[host.name] = cred
    return world


@pytest_asyncio.fixture(loop_scope="session")
async def world(clients: Clients) -> World:
    return await build_world(clients)
