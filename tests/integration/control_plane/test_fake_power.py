"""No fake hosts in production: EnrollHost refuses the ``fake`` power
driver unless the control plane runs with ``--allow-fake-power``, through
the API of real control planes (in process, and the
``bmaas-control-plane`` process with and without the flag)."""

from __future__ import annotations

import grpc
import pytest

from bmaas.v1 import tenant_pb2
from tools.region.control_plane import Clients, ControlPlaneProcess, InProcessControlPlane
from tools.region.etcd import EtcdServer
from tools.region.world import enroll


async def _enroll(c: Clients, host_id: str, driver: str) -> str:
    host, _ = await enroll(c, host_id=host_id, power_driver=driver, register=False)
    return str(host.state)


async def test_fake_is_refused_without_the_flag_and_nothing_is_written(etcd: EtcdServer) -> None:
    async with InProcessControlPlane(etcd) as plane, plane.clients() as c:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await _enroll(c, "sim-1", "fake")
        assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "--allow-fake-power" in str(exc.value.details())
        assert "\n" not in str(exc.value.details())
        listed = await c.operator.ListHosts(tenant_pb2.ListRequest(), metadata=c.op_md)
        assert [h.name for h in listed.hosts] == []  # nothing written
        await _enroll(c, "metal-1", "qemu")  # a real driver is fine
        listed = await c.operator.ListHosts(tenant_pb2.ListRequest(), metadata=c.op_md)
        assert [h.name for h in listed.hosts] == ["hosts/metal-1"]


async def test_fake_is_accepted_with_the_flag(etcd: EtcdServer) -> None:
    async with InProcessControlPlane(etcd, allow_fake_power=True) as plane, plane.clients() as c:
        await _enroll(c, "sim-1", "fake")
        got = await c.operator.GetHost(tenant_pb2.GetRequest(name="hosts/sim-1"), metadata=c.op_md)
        assert got.power_driver == "fake"


async def test_the_process_flag(etcd: EtcdServer) -> None:
    with ControlPlaneProcess(etcd, controllers=False) as strict:
        async with Clients(strict.port, tls=strict.client_tls) as c:
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await _enroll(c, "sim-1", "fake")
            assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with ControlPlaneProcess(etcd, controllers=False, allow_fake_power=True) as lax:
        async with Clients(lax.port, tls=lax.client_tls) as c:
            await _enroll(c, "sim-1", "fake")
