"""A small region: a real control plane (in this process) with one enrolled
host, a tenant with a token, an instance type, and helpers that speak the
tenant and operator APIs (``Region``); ``qemu_agent`` runs a real agent
(qemu power driver) for a host of the region.  The e2e tests and
``bench/vpc.py`` run on it."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from bmaas.v1 import common_pb2, operator_pb2, tenant_pb2
from control_plane.domain.storage import StorageConfig
from host_agent.agent import Agent
from host_agent.config import LocalDisk
from tools.region.agents import agent_config
from tools.region.control_plane import Clients, InProcessControlPlane, bearer
from tools.region.etcd import EtcdServer
from tools.region.guest import GuestImage
from tools.region.process import kill_processes_under
from tools.region.wait import wait_for
from tools.region.world import enroll, make_tenant

S = common_pb2


@dataclass
class Region:
    clients: Clients
    tenant_md: tuple[tuple[str, str], ...]
    tenant: str
    instance_type: str
    host: str
    credential: str
    port: int

    async def register_image(self, name: str, disk: Path, *, checksum: str = "") -> str:
        checksum = checksum or _sha256(disk)
        img = await self.clients.operator.RegisterImage(
            operator_pb2.RegisterImageRequest(
                image=common_pb2.Image(
                    name=f"images/{name}",
                    os="linux",
                    source_uri=f"file://{disk}",
                    size_gib=1,
                    checksum=checksum,
                )
            ),
            metadata=self.clients.op_md,
        )
        return str(img.name)

    async def create(self, image: str, *, user_data: str = "") -> str:
        async def attempt() -> str:
            try:
                inst = await self.clients.tenant.CreateInstance(
                    tenant_pb2.CreateInstanceRequest(
                        request_id=str(uuid.uuid4()),
                        instance=common_pb2.Instance(
                            name=f"{self.tenant}/instances/i{uuid.uuid4().hex[:8]}",
                            instance_type=self.instance_type,
                            image=image,
                            user_data=user_data,
                        ),
                    ),
                    metadata=self.tenant_md,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                return ""  # the scheduler has not seen the host AVAILABLE yet
            return str(inst.name)

        return str(await wait_for(attempt, 20, 0.2))

    async def instance(self, name: str) -> common_pb2.Instance:
        inst: common_pb2.Instance = await self.clients.tenant.GetInstance(
            tenant_pb2.GetRequest(name=name), metadata=self.tenant_md
        )
        return inst

    async def get_host(self) -> common_pb2.Host:
        host: common_pb2.Host = await self.clients.operator.GetHost(
            tenant_pb2.GetRequest(name=self.host), metadata=self.clients.op_md
        )
        return host

    async def wait_state(self, name: str, state: int, timeout: float = 90) -> common_pb2.Instance:
        async def reached() -> common_pb2.Instance | None:
            inst = await self.instance(name)
            if inst.state == S.INSTANCE_STATE_FAILED and state != S.INSTANCE_STATE_FAILED:
                raise AssertionError(f"{name} FAILED: {inst.failure_reason}")
            return inst if inst.state == state else None

        inst = await wait_for(reached, timeout, 0.2)
        assert inst is not None
        return inst

    async def console(self, name: str) -> str:
        out = await self.clients.tenant.GetConsoleOutput(
            tenant_pb2.GetConsoleOutputRequest(name=name), metadata=self.tenant_md
        )
        return str(out.output.decode(errors="replace"))

    async def wait_console(self, name: str, pattern: str, timeout: float = 150) -> re.Match[str]:
        regex = re.compile(pattern)

        async def seen() -> re.Match[str] | None:
            return regex.search(await self.console(name))

        match = await wait_for(seen, timeout, 0.5)
        assert match is not None
        return match

    async def action(self, verb: str, name: str) -> None:
        await getattr(self.clients.tenant, f"{verb}Instance")(
            tenant_pb2.InstanceActionRequest(name=name), metadata=self.tenant_md
        )

    def host_available(self) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return (await self.get_host()).state == S.HOST_STATE_AVAILABLE

        return check


@asynccontextmanager
async def running_region(
    etcd: EtcdServer, *, storage: StorageConfig | None = None
) -> AsyncIterator[Region]:
    """*storage*: the region's ``[storage]`` (default: files on each host)."""
    plane = InProcessControlPlane(etcd, controllers=True, storage=storage)
    async with plane, Clients(plane.port) as c:
        tenant, token = await make_tenant(c, f"t{uuid.uuid4().hex[:6]}")
        itype = await c.operator.CreateInstanceType(
            operator_pb2.CreateInstanceTypeRequest(
                instance_type=common_pb2.InstanceType(
                    name="instanceTypes/bm-small", host_class="small", cpus=1, memory_gib=1
                )
            ),
            metadata=c.op_md,
        )
        host, cred = await enroll(
            c, host_id="metal-1", host_class="small", power_driver="qemu", register=False
        )
        yield Region(c, bearer(token), tenant, itype.name, host.name, cred, plane.port)


@asynccontextmanager
async def qemu_agent(
    region: Region,
    state: Path,
    guest_image: GuestImage,
    *,
    host: str = "",
    credential: str = "",
    **kw: object,
) -> AsyncIterator[Agent]:
    """A running real agent (qemu power driver, a 1 GiB local disk) for *host*
    (default: the region's host).  An agent leaves its servers and back-ends
    running when it stops (as after a crash); so that a failed test leaks
    nothing, whatever still runs from its state or run directory is killed
    on the way out."""
    cfg = agent_config(
        port=region.port,
        host_id=(host or region.host).split("/")[1],
        credential=credential or region.credential,
        state_dir=state,
        power_driver="qemu",
        probe_kernel=guest_image.kernel,
        server_memory_mib=512,
        shutdown_grace=1.0,
        local_disks=(LocalDisk(name="nvme0", size_gib=1),),
        **kw,
    )
    try:
        async with Agent(cfg) as agent:
            yield agent
    finally:
        kill_processes_under(cfg.state_dir, cfg.run_dir)


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
