"""etcd housekeeping: the controllers' leader compacts history, and a full etcd
(NOSPACE alarm) makes the region say so and recover once space is freed.

Both run a real ``bmaas-control-plane`` against a real etcd; the control
plane's housekeeping runs every half second (its ``--config`` file) instead
of every five minutes.  The second test gives etcd a tiny space quota and
fills it with junk keys outside the control plane's root, as any other
tenant of a shared etcd could.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aetcd
import grpc
import pytest
from aetcd import rpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bmaas.v1 import common_pb2, operator_pb2, tenant_pb2
from tools.region.control_plane import Clients, ControlPlaneProcess
from tools.region.etcd import EtcdServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
QUOTA = 8 << 20
JUNK = b"/junk/"


def _config(tmp_path: Path, *, retention: float) -> tuple[str, ...]:
    path = tmp_path / "cp.toml"
    path.write_text(
        f"compaction_interval = 0.5\ncompaction_retention = {retention}\n"
        f"etcd_quota_bytes = {QUOTA}\n"
    )
    return ("--config", str(path))


@pytest.fixture
def tiny_etcd() -> Iterator[EtcdServer]:
    with EtcdServer(extra_args=(f"--quota-backend-bytes={QUOTA}",)) as etcd:
        yield etcd


async def _create_tenant(clients: Clients, name: str) -> None:
    await clients.operator.CreateTenant(
        operator_pb2.CreateTenantRequest(tenant=common_pb2.Tenant(name=f"tenants/{name}")),
        metadata=clients.op_md,
        timeout=10,
    )


async def _health(clients: Clients) -> int:
    stub = health_pb2_grpc.HealthStub(clients.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(reply.status)


async def _until(what: str, check: object, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {within} s")


async def test_the_leader_compacts_history(etcd: EtcdServer, tmp_path: Path) -> None:
    with ControlPlaneProcess(etcd, extra_args=_config(tmp_path, retention=1.0)) as cp:
        async with Clients(cp.port) as clients, aetcd.Client(host=etcd.host, port=etcd.port) as raw:
            await _create_tenant(clients, "compact-a")
            start = (await raw.kvstub.Range(rpc.RangeRequest(key=b"/"))).header.revision

            async def compacted() -> bool:
                await _create_tenant(clients, f"compact-{time.monotonic_ns()}")
                try:
                    await raw.kvstub.Range(rpc.RangeRequest(key=b"/", revision=start))
                except grpc.aio.AioRpcError as exc:
                    assert "compacted" in (exc.details() or ""), exc
                    return True
                return False

            await _until("history before the first write compacted", compacted, 20.0)
            # the compacted history never takes a current record with it
            reply = await clients.operator.GetTenant(
                tenant_pb2.GetRequest(name="tenants/compact-a"),
                metadata=clients.op_md,
                timeout=5,
            )
            assert reply.name == "tenants/compact-a"


async def test_nospace_is_reported_and_the_region_recovers(
    tiny_etcd: EtcdServer, tmp_path: Path
) -> None:
    with ControlPlaneProcess(tiny_etcd, extra_args=_config(tmp_path, retention=60.0)) as cp:
        async with (
            Clients(cp.port) as clients,
            aetcd.Client(host=tiny_etcd.host, port=tiny_etcd.port) as raw,
        ):
            await _create_tenant(clients, "before")
            assert await _health(clients) == SERVING
            blob = b"x" * (512 << 10)
            with pytest.raises(grpc.aio.AioRpcError) as full:
                for i in range(4 * QUOTA // len(blob)):
                    await raw.kvstub.Put(rpc.PutRequest(key=JUNK + b"%04d" % i, value=blob))
            assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

            async def not_serving() -> bool:
                return await _health(clients) == NOT_SERVING

            await _until("health NOT_SERVING on NOSPACE", not_serving, 10.0)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _create_tenant(clients, "during")
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "out of space" in (refused.value.details() or "")
            assert "NOSPACE" in (refused.value.details() or "")
            assert "during" not in str(await raw.get_prefix(b"/bmaas/"))

            await raw.delete_prefix(JUNK)  # the operator frees space

            async def writes_again() -> bool:
                try:
                    await _create_tenant(clients, f"after-{time.monotonic_ns()}")
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                    return False
                return await _health(clients) == SERVING

            try:
                await _until("writes and SERVING after space was freed", writes_again, 30.0)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; control plane log:\n{cp.tail()}") from None
            assert not (
                await raw.maintenancestub.Alarm(rpc.AlarmRequest(action=rpc.AlarmRequest.GET))
            ).alarms
