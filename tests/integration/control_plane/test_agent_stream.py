"""The ``Connect`` stream's guarantees, played by a raw client against a real
etcd: two streams of one host are served independently, and every
``DesiredState.generation`` names one snapshot (the etcd revision all of the
message was read at)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
import pytest_asyncio

from bmaas.v1 import agent_pb2, common_pb2, operator_pb2, tenant_pb2
from control_plane import metrics
from control_plane.domain.host import Host
from control_plane.domain.lifecycle import HostState
from control_plane.store import Store
from tools.region.control_plane import Clients, InProcessControlPlane, bearer
from tools.region.etcd import EtcdServer
from tools.region.wait import wait_for
from tools.region.world import World, build_world

S = common_pb2


async def next_desired(
    call: grpc.aio.StreamStreamCall, timeout: float = 10.0
) -> agent_pb2.DesiredState:
    msg = await asyncio.wait_for(call.read(), timeout)
    assert msg is not grpc.aio.EOF, "stream ended"
    assert msg.WhichOneof("body") == "desired_state"
    desired: agent_pb2.DesiredState = msg.desired_state
    return desired


@pytest_asyncio.fixture(loop_scope="session")
async def slow_resync(etcd: EtcdServer) -> AsyncIterator[InProcessControlPlane]:
    """A control plane with the production resync period (60 s): a stream
    that was not woken by its change would wait that long."""
    async with InProcessControlPlane(etcd, desired_resync=60.0, allow_fake_power=True) as plane:
        yield plane


async def test_closing_a_second_stream_leaves_the_first_awake(
    slow_resync: InProcessControlPlane,
) -> None:
    async with Clients(slow_resync.port) as c:
        w = await build_world(c, hosts=1)
        host_name, cred = next(iter(w.hosts.items()))
        first = c.agent.Connect(metadata=bearer(cred))
        await next_desired(first)
        open_streams = metrics.AGENT_STREAMS._value.get()
        second = c.agent.Connect(metadata=bearer(cred))  # the agent reconnecting
        await next_desired(second)
        assert metrics.AGENT_STREAMS._value.get() == open_streams + 1
        second.cancel()  # ... while the old stream is still open

        async def second_gone() -> bool:
            return bool(metrics.AGENT_STREAMS._value.get() == open_streams)

        await wait_for(second_gone, 10)
        assert slow_resync.api is not None
        assert slow_resync.api.deps.hub.streams(host_name.removeprefix("hosts/")) == 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        await c.operator.SetHostMaintenance(
            operator_pb2.SetHostMaintenanceRequest(name=host_name, maintenance=True),
            metadata=c.op_md,
        )
        desired = await next_desired(first, timeout=15)  # far below the 60 s resync
        assert desired.state == S.HOST_STATE_MAINTENANCE
        assert loop.time() - started < 15
        first.cancel()


async def _at(store: Store, host: str, revision: int) -> Host:
    return await store.get(Host, host, revision=revision)


async def test_every_generation_names_one_snapshot(cp_ctl: InProcessControlPlane) -> None:
    """Host ALLOCATED -> instance TERMINATED -> host CLEANING (one txn of the
    controllers): every message is the state of etcd at its generation, and
    two different messages never share a generation; a change of a volume
    alone (no host or instance write) still gets a new generation."""
    store = cp_ctl.store
    assert store is not None
    async with Clients(cp_ctl.port) as c:
        w: World = await build_world(c, hosts=1)
        host_name, cred = next(iter(w.hosts.items()))
        call = c.agent.Connect(metadata=bearer(cred))
        await call.write(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(host=host_name)))
        seen = [await next_desired(call)]
        vol = await c.tenant.CreateVolume(
            tenant_pb2.CreateVolumeRequest(volume=S.Volume(size_gib=7)), metadata=w.md
        )
        inst = await c.tenant.CreateInstance(
            tenant_pb2.CreateInstanceRequest(
                instance=S.Instance(
                    instance_type=w.instance_type, image=w.image, volumes=[vol.name]
                )
            ),
            metadata=w.md,
        )
        assert inst.host == host_name

        async def until(pred: Callable[[agent_pb2.DesiredState], bool]) -> agent_pb2.DesiredState:
            while True:
                msg = await next_desired(call)
                seen.append(msg)
                if pred(msg):
                    return msg

        def resized(m: agent_pb2.DesiredState) -> bool:
            return bool(m.instances) and [v.size_gib for v in m.instances[0].volumes] == [10, 9]

        bound = await until(lambda m: bool(m.instances))
        assert bound.state == S.HOST_STATE_ALLOCATED
        # a resize touches only the volume record: new content, new generation
        await c.tenant.ResizeVolume(
            tenant_pb2.ResizeVolumeRequest(name=vol.name, size_gib=9), metadata=w.md
        )
        await until(resized)
        await c.tenant.TerminateInstance(
            tenant_pb2.InstanceActionRequest(name=inst.name), metadata=w.md
        )
        cleaning = await until(lambda m: m.state == S.HOST_STATE_CLEANING)
        assert cleaning.clean and not cleaning.instances
        call.cancel()

    by_generation: dict[int, bytes] = {}
    for msg in seen:
        body = msg.SerializeToString(deterministic=True)
        assert by_generation.setdefault(msg.generation, body) == body, msg
        host = await _at(store, host_name, msg.generation)
        assert S.HostState.Name(msg.state) == f"HOST_STATE_{host.state.value}"
        assert [i.instance for i in msg.instances] == (
            [host.assigned_instance] if host.assigned_instance else []
        )
        # the mixed snapshot: the host still ALLOCATED to an instance
        # already TERMINATED (written in the same txn that released the host)
        for i in msg.instances:
            assert i.state != S.INSTANCE_STATE_TERMINATED, msg
    generations = [m.generation for m in seen]
    assert generations == sorted(set(generations))
    assert HostState.CLEANING.value in {
        S.HostState.Name(m.state).removeprefix("HOST_STATE_") for m in seen
    }
