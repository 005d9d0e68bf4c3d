"""TLS on the gRPC API, against a real ``bmaas-control-plane`` process: the
region's CA lets a client in; a plaintext client and a client trusting
another CA are refused; without TLS flags or ``--insecure`` the process
refuses to start with one line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bmaas.v1 import tenant_pb2
from bmaas_tls import ClientTls, aio_channel
from tools.region.control_plane import OPERATOR_TOKEN, Clients, ControlPlaneProcess, bearer
from tools.region.etcd import EtcdServer
from tools.region.paths import ROOT
from tools.region.pki import Pki, default_pki, make_pki


@pytest.fixture
def tls_plane(etcd: EtcdServer) -> Iterator[ControlPlaneProcess]:
    with ControlPlaneProcess(etcd, controllers=False) as cp:
        yield cp


async def _list_hosts(port: int, tls: ClientTls) -> int:
    """How many hosts ListHosts returns over a channel with *tls*."""
    async with Clients(port, tls=tls) as c:
        resp = await c.operator.ListHosts(
            tenant_pb2.ListRequest(), metadata=bearer(OPERATOR_TOKEN), timeout=5
        )
        return len(resp.hosts)


async def test_a_client_trusting_the_region_ca_gets_in(tls_plane: ControlPlaneProcess) -> None:
    assert await _list_hosts(tls_plane.port, tls_plane.client_tls) == 0


async def test_a_plaintext_client_is_refused(tls_plane: ControlPlaneProcess) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await _list_hosts(tls_plane.port, ClientTls(insecure=True))
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    # nor does the unauthenticated health service answer in plaintext
    async with aio_channel(f"127.0.0.1:{tls_plane.port}", ClientTls(insecure=True)) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_trusting_another_ca_is_refused(
    tls_plane: ControlPlaneProcess, tmp_path: Path
) -> None:
    rogue = make_pki(tmp_path / "rogue", name="rogue")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await _list_hosts(tls_plane.port, rogue.client_tls())
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "CERTIFICATE_VERIFY_FAILED" in str(exc.value.details())
    # the system's roots do not know the region's CA either
    with pytest.raises(grpc.aio.AioRpcError):
        await _list_hosts(tls_plane.port, ClientTls())


async def test_a_server_certificate_of_another_ca_is_refused(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    rogue: Pki = make_pki(tmp_path / "rogue", name="rogue")
    with ControlPlaneProcess(etcd, controllers=False, pki=rogue) as cp:
        assert await _list_hosts(cp.port, rogue.client_tls()) == 0
        with pytest.raises(grpc.aio.AioRpcError) as exc:  # the region's CA did not sign it
            await _list_hosts(cp.port, default_pki().client_tls())
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_insecure_is_plaintext_only_when_asked(etcd: EtcdServer) -> None:
    with ControlPlaneProcess(etcd, controllers=False, insecure=True) as cp:
        assert await _list_hosts(cp.port, ClientTls(insecure=True)) == 0
        with pytest.raises(grpc.aio.AioRpcError) as exc:  # a TLS client finds no TLS there
            await _list_hosts(cp.port, default_pki().client_tls())
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE


def _start(etcd: EtcdServer, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "control_plane.main", "--etcd", etcd.url,
         "--listen", "127.0.0.1:0", *flags],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip


def test_without_tls_flags_the_control_plane_refuses_to_start(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    cases = {
        (): "--insecure",
        ("--tls-cert", str(pki.server.cert)): "--tls-cert and --tls-key go together",
        ("--tls-cert", str(pki.server.cert), "--tls-key", str(tmp_path / "none.key")):
            f"--tls-key {tmp_path / 'none.key'}: No such file",
        ("--insecure", "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)):
            "exclude each other",
    }  # fmt: skip
    for flags, says in cases.items():
        done = _start(etcd, *flags)
        assert done.returncode == 2, (flags, done.stderr)
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("bmaas-control-plane: error: "), lines
        assert says in lines[0]
