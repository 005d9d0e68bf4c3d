"""``bmaas-control-plane`` as a process: health and reflection services,
the Prometheus ``/metrics`` listener, and graceful SIGTERM (exit 0, leader
seat released at once instead of after the lease TTL)."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request

import aetcd
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from bmaas.v1 import tenant_pb2
from tools.region.control_plane import Clients, ControlPlaneProcess, bearer
from tools.region.etcd import EtcdServer
from tools.region.ports import free_port
from tools.region.wait import wait_for

SEAT = b"/bmaas/v1/leases/controllers"


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


async def seat(etcd: EtcdServer) -> bytes | None:
    async with aetcd.Client(host=etcd.host, port=etcd.port) as client:
        got = await client.get(SEAT)
    return got.value if got else None


async def test_health_reflection_metrics_and_graceful_stop(etcd: EtcdServer) -> None:
    mport = free_port()
    cp = ControlPlaneProcess(etcd, lease_ttl=10, extra_args=("--metrics", f"127.0.0.1:{mport}"))
    cp.start()
    try:
        async with Clients(cp.port) as c:
            health = health_pb2_grpc.HealthStub(c.channel)
            for service in ("", "bmaas.v1.TenantService", "bmaas.v1.AgentService"):
                resp = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert resp.status == health_pb2.HealthCheckResponse.SERVING
            refl = reflection_pb2_grpc.ServerReflectionStub(c.channel)
            call = refl.ServerReflectionInfo()
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            answer = await call.read()
            await call.done_writing()
            names = {s.name for s in answer.list_services_response.service}
            assert {
                "bmaas.v1.TenantService",
                "bmaas.v1.OperatorService",
                "bmaas.v1.AgentService",
                "grpc.health.v1.Health",
            } <= names
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await c.tenant.ListImages(tenant_pb2.ListRequest(), metadata=bearer("nope"))
            assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
            await wait_for(lambda: seat(etcd), timeout=10)
        text = await asyncio.to_thread(fetch, f"http://127.0.0.1:{mport}/metrics")
        assert "# HELP bmaas_cp_rpc_requests_total" in text
        assert re.search(
            r'bmaas_cp_rpc_requests_total\{code="UNAUTHENTICATED",method="ListImages",'
            r'service="TenantService"\} 1\.0',
            text,
        )
        assert "bmaas_cp_rpc_duration_seconds_bucket" in text
        assert re.search(r'bmaas_cp_etcd_round_trips_total\{op="Txn"\} [1-9]', text)
        start = time.monotonic()
        assert cp.terminate() == 0
        assert await seat(etcd) is None, "a clean stop must resign the leader seat"
        assert time.monotonic() - start < 8
    finally:
        cp.close()
