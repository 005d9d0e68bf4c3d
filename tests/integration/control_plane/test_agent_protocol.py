"""The host agent and the control plane speaking AgentService for real.

Real etcd, a real control plane with its controllers, a real ``Agent``
(the library ``bmaas-agent`` runs) on the ``fake`` power driver: every
state change below is driven through the tenant API and completed only by
what the agent reports over its ``Connect`` stream."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest_asyncio

from bmaas.v1 import common_pb2, tenant_pb2
from host_agent import metrics
from host_agent.agent import Agent
from tools.region.agents import agent_config, running_agent
from tools.region.control_plane import Clients, ControlPlaneProcess, InProcessControlPlane
from tools.region.etcd import EtcdServer
from tools.region.ports import free_port
from tools.region.wait import wait_for
from tools.region.world import World, build_world

S = common_pb2


@pytest_asyncio.fixture(loop_scope="session")
async def plane(cp_ctl: InProcessControlPlane) -> AsyncIterator[tuple[Clients, World]]:
    async with Clients(cp_ctl.port) as c:
        yield c, await build_world(c, hosts=1)


async def _instance(c: Clients, w: World, name: str) -> common_pb2.Instance:
    return await c.tenant.GetInstance(tenant_pb2.GetRequest(name=name), metadata=w.md)


async def _wait_state(c: Clients, w: World, name: str, state: int, timeout: float = 15) -> None:
    async def reached() -> bool:
        return (await _instance(c, w, name)).state == state

    await wait_for(reached, timeout)


async def _host(c: Clients, name: str) -> common_pb2.Host:
    return await c.operator.GetHost(tenant_pb2.GetRequest(name=name), metadata=c.op_md)


async def _action(c: Clients, w: World, verb: str, name: str) -> common_pb2.Instance:
    req = tenant_pb2.InstanceActionRequest(name=name)
    return await getattr(c.tenant, f"{verb}Instance")(req, metadata=w.md)


async def _create(c: Clients, w: World) -> str:
    inst = await c.tenant.CreateInstance(
        tenant_pb2.CreateInstanceRequest(
            request_id=str(uuid.uuid4()),
            instance=common_pb2.Instance(
                name=f"{w.tenant}/instances/i{uuid.uuid4().hex[:8]}",
                instance_type=w.instance_type,
                image=w.image,
            ),
        ),
        metadata=w.md,
    )
    return inst.name


async def test_lifecycle_through_the_agent(plane: tuple[Clients, World], tmp_path: Path) -> None:
    c, w = plane
    (host_name, cred) = next(iter(w.hosts.items()))
    cfg = agent_config(
        port=c.port, host_id=host_name.split("/")[1], credential=cred, state_dir=tmp_path / "a"
    )
    reconnects = metrics.RECONNECTS._value.get()
    async with running_agent(cfg) as agent:
        name = await _create(c, w)
        await _wait_state(c, w, name, S.INSTANCE_STATE_RUNNING)
        driver = agent.reconciler._drivers[name]
        assert driver.boots == 1  # type: ignore[attr-defined]

        async def console_has_power_on() -> bool:
            out = await c.tenant.GetConsoleOutput(
                tenant_pb2.GetConsoleOutputRequest(name=name), metadata=w.md
            )
            return b"power on" in out.output

        await wait_for(console_has_power_on, 10)

        await _action(c, w, "Stop", name)
        await _wait_state(c, w, name, S.INSTANCE_STATE_STOPPED)
        assert await driver.state() == "off"
        await _action(c, w, "Start", name)
        await _wait_state(c, w, name, S.INSTANCE_STATE_RUNNING)
        assert driver.boots == 2  # type: ignore[attr-defined]
        await _action(c, w, "Reboot", name)
        await _wait_state(c, w, name, S.INSTANCE_STATE_RUNNING)
        assert driver.boots == 3  # type: ignore[attr-defined]
        assert agent.reconciler.state.instances[name].generation == 3

        before = (await _host(c, host_name)).cleaning_epoch
        await _action(c, w, "Terminate", name)
        await _wait_state(c, w, name, S.INSTANCE_STATE_TERMINATED)

        async def available() -> bool:
            h = await _host(c, host_name)
            return h.state == S.HOST_STATE_AVAILABLE and h.cleaning_epoch == before + 1

        await wait_for(available, 15)
        assert agent.reconciler.state.wiped_epoch == before + 1
        assert name not in agent.reconciler.state.instances
        # statuses about the terminated instance were dropped, not fatal: one stream all along
        assert agent.link.connected.is_set()
        assert metrics.RECONNECTS._value.get() == reconnects
        # the host is reusable: a second instance lands on it and runs (no
        # retry: the scheduler's revision barrier sees it AVAILABLE at once)
        second = await _create(c, w)
        await _wait_state(c, w, second, S.INSTANCE_STATE_RUNNING)
        await _action(c, w, "Terminate", second)
        await wait_for(_available(c, host_name), 15)


def _create_when_free(c: Clients, w: World) -> Callable[[], Awaitable[str]]:
    async def attempt() -> str:
        try:
            return await _create(c, w)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            return ""

    return attempt


def _available(c: Clients, host_name: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await _host(c, host_name)).state == S.HOST_STATE_AVAILABLE

    return check


async def test_cleaning_waits_for_the_agent(plane: tuple[Clients, World], tmp_path: Path) -> None:
    """Without an agent nothing moves: no RUNNING, no AVAILABLE after CLEANING."""
    c, w = plane
    (host_name, cred) = next(iter(w.hosts.items()))
    cfg = agent_config(
        port=c.port, host_id=host_name.split("/")[1], credential=cred, state_dir=tmp_path / "a"
    )
    agent = Agent(cfg)
    await agent.start()
    name = await _create(c, w)
    await _wait_state(c, w, name, S.INSTANCE_STATE_RUNNING)
    await agent.aclose()  # the agent is gone (its fake server keeps "running")
    await _action(c, w, "Terminate", name)
    await _wait_state(c, w, name, S.INSTANCE_STATE_TERMINATED)
    await asyncio.sleep(1.5)
    assert (await _host(c, host_name)).state != S.HOST_STATE_AVAILABLE
    async with running_agent(cfg):  # it comes back, tears down, wipes, reports
        await wait_for(_available(c, host_name), 15)


async def test_silent_agent_host_unreachable_then_converges_without_reprovisioning(
    plane: tuple[Clients, World], tmp_path: Path
) -> None:
    c, w = plane
    (host_name, cred) = next(iter(w.hosts.items()))
    cfg = agent_config(
        port=c.port, host_id=host_name.split("/")[1], credential=cred, state_dir=tmp_path / "a"
    )
    async with running_agent(cfg):
        name = await _create(c, w)
        await _wait_state(c, w, name, S.INSTANCE_STATE_RUNNING)
    # the agent is gone (its server keeps running): heartbeats stop

    async def unreachable_and_impaired() -> bool:
        host = await _host(c, host_name)
        inst = await _instance(c, w, name)
        impaired = any(
            cond.type == "Impaired" and cond.status == "True" for cond in inst.conditions
        )
        return host.state == S.HOST_STATE_UNREACHABLE and impaired

    await wait_for(unreachable_and_impaired, 20)
    assert (await _instance(c, w, name)).state == S.INSTANCE_STATE_RUNNING
    async with running_agent(cfg) as agent:

        async def converged() -> bool:
            host = await _host(c, host_name)
            inst = await _instance(c, w, name)
            healthy = any(
                cond.type == "Impaired" and cond.status == "False" for cond in inst.conditions
            )
            return host.state == S.HOST_STATE_ALLOCATED and healthy

        await wait_for(converged, 20)
        driver = agent.reconciler._drivers[name]
        assert await driver.state() == "on"  # adopted, never powered off
        assert driver.boots == 0  # type: ignore[attr-defined]
        assert (await _instance(c, w, name)).state == S.INSTANCE_STATE_RUNNING
        await _action(c, w, "Terminate", name)
        await wait_for(_available(c, host_name), 15)


async def test_control_plane_restart_agents_reconnect_nothing_reprovisioned(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    port = free_port()
    cp = ControlPlaneProcess(
        etcd, allow_fake_power=True, extra_args=("--listen", f"127.0.0.1:{port}")
    )
    await asyncio.to_thread(cp.start)
    try:
        async with Clients(port) as c:
            w = await build_world(c, hosts=1)
            (host_name, cred) = next(iter(w.hosts.items()))
            cfg = agent_config(
                port=port, host_id=host_name.split("/")[1], credential=cred, state_dir=tmp_path
            )
            async with running_agent(cfg) as agent:
                name = await wait_for(_create_when_free(c, w), 10)
                await _wait_state(c, w, name, S.INSTANCE_STATE_RUNNING)
                driver = agent.reconciler._drivers[name]
                reconnects = metrics.RECONNECTS._value.get()
                await asyncio.to_thread(cp.terminate)
                await asyncio.sleep(1.0)
                assert not agent.link.connected.is_set()
                await asyncio.to_thread(cp.start)
                await wait_for(_connected(agent), 20)
                assert metrics.RECONNECTS._value.get() > reconnects
                # still RUNNING, never powered off or re-provisioned
                await asyncio.sleep(1.0)
                assert (await _instance(c, w, name)).state == S.INSTANCE_STATE_RUNNING
                assert driver.boots == 1  # type: ignore[attr-defined]
                assert agent.reconciler._drivers[name] is driver
                # and the restarted control plane drives it as before
                await _action(c, w, "Reboot", name)
                await _wait_state(c, w, name, S.INSTANCE_STATE_RUNNING)
                assert driver.boots == 2  # type: ignore[attr-defined]
    finally:
        await asyncio.to_thread(cp.close)


def _connected(agent: Agent) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return agent.link.connected.is_set()

    return check
