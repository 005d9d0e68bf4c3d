"""Health tells the truth: readiness follows the etcd quorum, liveness does not.

A replica on a 3-member cluster stays SERVING through the loss of one
member, goes NOT_SERVING within a few seconds of losing the quorum (its
``liveness`` service stays SERVING), and SERVING again once a quorum is
back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bmaas_tls import aio_channel
from tools.region.control_plane import ControlPlaneProcess
from tools.region.etcd import EtcdCluster

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster(3) as c:
        yield c


async def _status(stub: health_pb2_grpc.HealthStub, service: str = "") -> int:
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


async def _until(stub: health_pb2_grpc.HealthStub, want: int, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if await _status(stub) == want:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"health not {want} within {within} s")


async def test_readiness_follows_the_quorum(cluster: EtcdCluster) -> None:
    with ControlPlaneProcess(cluster, controllers=False) as cp:
        async with aio_channel(f"127.0.0.1:{cp.port}", cp.client_tls) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            assert await _status(stub) == SERVING
            assert await _status(stub, "liveness") == SERVING
            cluster.kill(0)  # one member: a quorum is left, nothing changes
            for _ in range(20):
                assert await _status(stub) == SERVING
                await asyncio.sleep(0.1)
            cluster.kill(1)  # no quorum any more
            took = await _until(stub, NOT_SERVING, 8.0)
            assert took < 5.0
            assert await _status(stub, "bmaas.v1.TenantService") == NOT_SERVING
            assert await _status(stub, "liveness") == SERVING
            await asyncio.to_thread(cluster.restart, 1)
            await _until(stub, SERVING, 10.0)
