"""AgentService contract tests: Register and the Connect stream, against a
real etcd.  An agent acts only for the host its credential names."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from bmaas.v1 import agent_pb2, common_pb2, operator_pb2, tenant_pb2
from control_plane import metrics
from control_plane.domain.agent import AgentPhase
from tools.region.control_plane import Clients, InProcessControlPlane, bearer
from tools.region.wait import wait_for
from tools.region.world import World, enroll


async def next_desired(
    call: grpc.aio.StreamStreamCall, timeout: float = 5.0
) -> agent_pb2.DesiredState:
    msg = await asyncio.wait_for(call.read(), timeout)
    assert msg is not grpc.aio.EOF, "stream ended"
    assert msg.WhichOneof("body") == "desired_state"
    desired: agent_pb2.DesiredState = msg.desired_state
    return desired


async def test_register_checks_the_credential_and_the_host(clients: Clients) -> None:
    c = clients
    _, cred_a = await enroll(c, host_id="ha", register=False)
    await enroll(c, host_id="hb", register=False)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await c.agent.Register(agent_pb2.RegisterRequest(host="hosts/hb"), metadata=bearer(cred_a))
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "hosts/ha" in (exc.value.details() or "")
    for bad in ("", "ha.wrong-secret", "hb." + cred_a.split(".", 1)[1], "nodot"):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await c.agent.Register(agent_pb2.RegisterRequest(host="hosts/ha"), metadata=bearer(bad))
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # an agent whose power driver is not the one the host was enrolled with ("fake")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await c.agent.Register(
            agent_pb2.RegisterRequest(host="hosts/ha", power_driver="qemu"),
            metadata=bearer(cred_a),
        )
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "enrolled with power driver 'fake', but this agent runs 'qemu'" in (
        exc.value.details() or ""
    )
    for name in ("hosts/ha", "hosts/hb"):
        h = await c.operator.GetHost(tenant_pb2.GetRequest(name=name), metadata=c.op_md)
        assert h.state == common_pb2.HOST_STATE_ENROLLED  # untouched by the refused calls
    ok = await c.agent.Register(
        agent_pb2.RegisterRequest(host="hosts/ha", agent_version="1.0", power_driver="fake"),
        metadata=bearer(cred_a),
    )
    # registered: wiped before its first tenant (AVAILABLE on the wipe report)
    assert (ok.host.state, ok.host.cleaning_epoch) == (common_pb2.HOST_STATE_CLEANING, 1)


async def test_decommissioned_host_credential_stops_working(
    clients: Clients, cp: InProcessControlPlane
) -> None:
    c = clients
    _, cred = await enroll(c, host_id="hd")
    await c.operator.SetHostMaintenance(
        operator_pb2.SetHostMaintenanceRequest(name="hosts/hd", maintenance=True), metadata=c.op_md
    )
    await c.operator.DecommissionHost(
        operator_pb2.HostActionRequest(name="hosts/hd"), metadata=c.op_md
    )
    assert cp.api is not None
    cp.api.auth.forget()  # drop the verified-credential cache
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await c.agent.Register(agent_pb2.RegisterRequest(host="hosts/hd"), metadata=bearer(cred))
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_connect_streams_desired_state_and_records_status(
    world: World, cp: InProcessControlPlane
) -> None:
    w, c = world, world.clients
    store = cp.store
    assert store is not None
    host_name, cred = next(iter(w.hosts.items()))
    host_id = host_name.removeprefix("hosts/")
    call = c.agent.Connect(metadata=bearer(cred))
    first = await next_desired(call)
    assert first.host == host_name and first.state == common_pb2.HOST_STATE_AVAILABLE
    assert list(first.instances) == [] and first.generation > 0

    await call.write(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(host=host_name)))
    await wait_for(lambda: store.liveness.is_alive(host_id))

    # Pin the instance to this host: cordon the others.
    for other in w.hosts:
        if other != host_name:
            await c.operator.CordonHost(
                operator_pb2.HostActionRequest(name=other), metadata=c.op_md
            )
    vol = await c.tenant.CreateVolume(
        tenant_pb2.CreateVolumeRequest(volume=common_pb2.Volume(size_gib=7)), metadata=w.md
    )
    inst = await c.tenant.CreateInstance(
        tenant_pb2.CreateInstanceRequest(
            instance=common_pb2.Instance(
                instance_type=w.instance_type,
                image=w.image,
                volumes=[vol.name],
                user_data="#cloud-config\n",
            )
        ),
        metadata=w.md,
    )
    assert inst.host == host_name
    desired = await next_desired(call)
    assert desired.state == common_pb2.HOST_STATE_ALLOCATED
    assert desired.generation > first.generation
    (di,) = desired.instances
    assert di.instance == inst.name and di.tenant == "acme"
    assert di.power == common_pb2.POWER_STATE_ON and not di.terminate
    assert di.image_source_uri == "file:///images/d12.raw" and di.user_data == "#cloud-config\n"
    assert [(v.boot, v.size_gib) for v in di.volumes] == [(True, 10), (False, 7)]

    await call.write(
        agent_pb2.AgentMessage(
            instance_status=agent_pb2.InstanceStatus(
                instance=inst.name, phase=common_pb2.INSTANCE_STATE_RUNNING, message="booted"
            )
        )
    )
    await call.write(
        agent_pb2.AgentMessage(host_status=agent_pb2.HostStatus(host=host_name, wiped_epoch=3))
    )

    async def reported() -> bool:
        rep = await store.reports.get(host_id)
        return bool(rep and rep.instance_phase == AgentPhase.RUNNING and rep.wiped_epoch == 3)

    await wait_for(reported)

    # Terminate: the next desired state asks for teardown.
    await c.tenant.TerminateInstance(
        tenant_pb2.InstanceActionRequest(name=inst.name), metadata=w.md
    )
    teardown = await next_desired(call)
    assert teardown.instances[0].terminate
    assert teardown.instances[0].power == common_pb2.POWER_STATE_OFF

    # A status about a foreign host ends the stream with PERMISSION_DENIED.
    await call.write(
        agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(host="hosts/someone-else"))
    )
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        while True:
            msg = await asyncio.wait_for(call.read(), 5)
            assert msg is not grpc.aio.EOF
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_connect_drops_status_for_instances_not_on_the_host(
    world: World, cp: InProcessControlPlane
) -> None:
    """A status or console tail about an instance not bound to the host (an
    agent that has not yet heard of a termination) is dropped and counted;
    the stream stays open and nothing reaches the report or the console."""
    w, c = world, world.clients
    store = cp.store
    assert store is not None
    host_name, cred = next(iter(w.hosts.items()))
    host_id = host_name.removeprefix("hosts/")
    other = "tenants/acme/instances/i-other"
    stale = metrics.AGENT_STALE_MESSAGES._value.get()
    call = c.agent.Connect(metadata=bearer(cred))
    first = await next_desired(call)
    await call.write(
        agent_pb2.AgentMessage(
            instance_status=agent_pb2.InstanceStatus(
                instance=other, phase=common_pb2.INSTANCE_STATE_RUNNING, generation=7
            )
        )
    )
    await call.write(
        agent_pb2.AgentMessage(console=agent_pb2.ConsoleTail(instance=other, tail=b"boot\n"))
    )
    await wait_for(lambda: _async(metrics.AGENT_STALE_MESSAGES._value.get() == stale + 2))
    # the stream still works both ways: a heartbeat is applied ...
    await call.write(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(host=host_name)))
    await wait_for(lambda: store.liveness.is_alive(host_id))
    # ... and a change of the host's desired state is pushed down
    await c.operator.SetHostMaintenance(
        operator_pb2.SetHostMaintenanceRequest(name=host_name, maintenance=True), metadata=c.op_md
    )
    maintained = await next_desired(call)
    assert maintained.state == common_pb2.HOST_STATE_MAINTENANCE
    assert maintained.generation > first.generation
    report = await store.reports.get(host_id)  # only the wipe report of its registration
    assert report is not None and report.instance == "" and report.generation == 0
    assert await store.consoles.get(other) == b""
    call.cancel()

    bad = c.agent.Connect(metadata=bearer("h0.not-the-secret"))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await asyncio.wait_for(bad.read(), 5)
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    empty = c.agent.Connect(metadata=bearer(cred))
    await next_desired(empty)
    await empty.write(agent_pb2.AgentMessage())
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        while True:
            await asyncio.wait_for(empty.read(), 5)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def _async(value: bool) -> bool:
    return value


async def test_volume_qos_reaches_the_agent_and_follows_update_volume(world: World) -> None:
    w, c = world, world.clients
    host_name, cred = next(iter(w.hosts.items()))
    for other in w.hosts:
        if other != host_name:
            await c.operator.CordonHost(
                operator_pb2.HostActionRequest(name=other), metadata=c.op_md
            )
    vol = await c.tenant.CreateVolume(
        tenant_pb2.CreateVolumeRequest(
            volume=common_pb2.Volume(size_gib=7, max_iops=1000, max_mbps=40)
        ),
        metadata=w.md,
    )
    assert (vol.max_iops, vol.max_mbps) == (1000, 40)
    for bad in (
        tenant_pb2.UpdateVolumeRequest(name=vol.name, max_iops=10**8),
        tenant_pb2.UpdateVolumeRequest(name=vol.name, max_iops=1, etag="stale"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await c.tenant.UpdateVolume(bad, metadata=w.md)
        assert exc.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ABORTED)
    inst = await c.tenant.CreateInstance(
        tenant_pb2.CreateInstanceRequest(
            instance=common_pb2.Instance(
                instance_type=w.instance_type, image=w.image, volumes=[vol.name]
            )
        ),
        metadata=w.md,
    )
    assert inst.host == host_name
    call = c.agent.Connect(metadata=bearer(cred))
    desired = await next_desired(call)
    data = [v for v in desired.instances[0].volumes if not v.boot]
    assert [(v.max_iops, v.max_mbps) for v in data] == [(1000, 40)]
    updated = await c.tenant.UpdateVolume(
        tenant_pb2.UpdateVolumeRequest(name=vol.name, max_iops=200, max_mbps=0), metadata=w.md
    )
    assert (updated.max_iops, updated.max_mbps) == (200, 0) and updated.instance == inst.name
    desired = await next_desired(call)
    data = [v for v in desired.instances[0].volumes if not v.boot]
    assert [(v.max_iops, v.max_mbps) for v in data] == [(200, 0)]
    got = await c.tenant.GetVolume(tenant_pb2.GetRequest(name=vol.name), metadata=w.md)
    assert got.max_iops == 200
    call.cancel()
