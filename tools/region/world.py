"""The operator's first steps in a new region, through the API.

``make_tenant`` creates a tenant and issues it a token; ``enroll`` enrolls a
host (and, by default, does what its agent does first: ``Register``, which
puts the host in CLEANING, then the wipe report for that cleaning epoch on
a ``Connect`` stream -- there is nothing to wipe behind a fake host -- and
waits until a host controller made it AVAILABLE); ``build_world``
sets up a tenant, an instance type, an image and *hosts* enrolled hosts,
returned as a ``World`` (the agents' credentials by host name).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import grpc

from bmaas.v1 import agent_pb2, agent_pb2_grpc, common_pb2, operator_pb2, tenant_pb2
from tools.region.control_plane import Clients, bearer
from tools.region.wait import wait_for


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
    power_driver: str = "fake",
    register: bool = True,
    available_within: float = 20.0,
    local_disk_gib: int = 1920,
) -> tuple[common_pb2.Host, str]:
    """*local_disk_gib*: size of the host's instance-store disk nvme0; 0 for none."""
    resp = await c.operator.EnrollHost(
        operator_pb2.EnrollHostRequest(
            request_id=str(uuid.uuid4()),
            host=common_pb2.Host(
                name=f"hosts/{host_id}",
                zone=zone,
                rack=rack,
                host_class=host_class,
                power_driver=power_driver,
                hardware=common_pb2.HardwareProfile(
                    cpus=64,
                    memory_gib=256,
                    disks=[common_pb2.Disk(name="nvme0", size_gib=local_disk_gib)]
                    if local_disk_gib
                    else [],
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
        host = await report_wiped(
            c,
            host.name,
            resp.agent_credential,
            reg.host.cleaning_epoch,
            until=common_pb2.HOST_STATE_AVAILABLE,
            timeout=available_within,
        )
    return host, resp.agent_credential


async def report_wiped(
    c: Clients,
    host: str,
    credential: str,
    epoch: int,
    *,
    until: int | None = None,
    timeout: float = 20.0,
) -> common_pb2.Host:
    """An agent's wipe report for cleaning *epoch* of *host*, on a Connect
    stream of its own (no heartbeat: the host is not watched for liveness
    afterwards).  With *until*, the stream stays open until the host is in
    that state (a host controller acted on the report); without, until the
    server has read the report (it ends the stream once the agent's side is
    closed).  DEADLINE_EXCEEDED or an AssertionError after *timeout* s."""
    stub: agent_pb2_grpc.AgentServiceStub = c.agent
    call = stub.Connect(metadata=bearer(credential), timeout=timeout)
    try:
        await call.write(
            agent_pb2.AgentMessage(
                host_status=agent_pb2.HostStatus(host=host, wiped_epoch=epoch, message="wiped")
            )
        )
        if until is not None:
            return await wait_host_state(c, host, until, timeout=timeout)
        await call.done_writing()
        while await call.read() is not grpc.aio.EOF:
            pass  # desired states, until the server closes the stream
        got: common_pb2.Host = await c.operator.GetHost(
            tenant_pb2.GetRequest(name=host), metadata=c.op_md, timeout=10
        )
        return got
    finally:
        call.cancel()


async def wait_host_state(
    c: Clients, name: str, state: int, *, timeout: float = 20.0
) -> common_pb2.Host:
    """*name* once it is in *state* (polled through the operator API)."""

    async def reached() -> common_pb2.Host | None:
        got: common_pb2.Host = await c.operator.GetHost(
            tenant_pb2.GetRequest(name=name), metadata=c.op_md, timeout=10
        )
        return got if got.state == state else None

    host = await wait_for(reached, timeout, 0.05)
    assert host is not None
    return host


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
