"""Agents prove their host with a client certificate from the region's CA
(``--tls-client-ca`` and the agent port), through a real control plane and
real agents: an agent with its host's certificate gets in; another host's
certificate, no certificate, or one from another CA is refused; an open
stream is closed within a second of its host being decommissioned."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from bmaas.v1 import agent_pb2, common_pb2, operator_pb2
from bmaas_tls import ClientTls
from tools.region.agents import agent_config, running_agent
from tools.region.control_plane import Clients, InProcessControlPlane, bearer
from tools.region.etcd import EtcdServer
from tools.region.pki import Pki, default_pki, make_pki
from tools.region.world import enroll, wait_host_state

S = common_pb2


@pytest_asyncio.fixture(loop_scope="session")
async def plane(etcd: EtcdServer) -> AsyncIterator[InProcessControlPlane]:
    async with InProcessControlPlane(
        etcd, controllers=True, allow_fake_power=True, agent_identity=True
    ) as cp:
        assert cp.agent_port and cp.agent_port != cp.port
        yield cp


async def _register(port: int, tls: ClientTls, host_id: str, credential: str) -> S.Host:
    async with Clients(port, tls=tls) as c:
        reg = await c.agent.Register(
            agent_pb2.RegisterRequest(host=f"hosts/{host_id}"),
            metadata=bearer(credential),
            timeout=10,
        )
        host: S.Host = reg.host
        return host


async def _refused(
    port: int, tls: ClientTls, host_id: str, credential: str
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await _register(port, tls, host_id, credential)
    return exc.value


async def test_an_agent_with_its_hosts_certificate_gets_in(
    plane: InProcessControlPlane, tmp_path: Path
) -> None:
    pki = default_pki()
    async with plane.clients() as c:
        _, cred = await enroll(c, host_id="id-a", register=False)
        cfg = agent_config(
            port=plane.agent_port,
            host_id="id-a",
            credential=cred,
            state_dir=tmp_path,
            tls=pki.client_tls(pki.issue_host("id-a")),
        )
        async with running_agent(cfg):  # registers, wipes, reports
            await wait_host_state(c, "hosts/id-a", S.HOST_STATE_AVAILABLE, timeout=20)


async def test_another_hosts_certificate_is_refused(
    plane: InProcessControlPlane, tmp_path: Path
) -> None:
    pki = default_pki()
    async with plane.clients() as c:
        _, cred_b = await enroll(c, host_id="id-b", register=False)
        await enroll(c, host_id="id-c", register=False)
        # the credential of id-b with the certificate of id-c
        wrong = await _refused(
            plane.agent_port, pki.client_tls(pki.issue_host("id-c")), "id-b", cred_b
        )
        assert wrong.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "names hosts/id-c, the credential hosts/id-b" in str(wrong.details())
        # no certificate: on the API port none is asked for, so the agent is refused
        bare = await _refused(plane.port, pki.client_tls(), "id-b", cred_b)
        assert bare.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "names no host" in str(bare.details())
        # ... and the agent port's handshake requires one
        port_only = await _refused(plane.agent_port, pki.client_tls(), "id-b", cred_b)
        assert port_only.code() == grpc.StatusCode.UNAVAILABLE
        # a certificate naming id-b, but from another CA
        rogue: Pki = make_pki(tmp_path / "rogue", name="rogue")
        forged = ClientTls(
            ca=pki.ca, cert=rogue.issue_host("id-b").cert, key=rogue.issue_host("id-b").key
        )
        assert (await _refused(plane.agent_port, forged, "id-b", cred_b)).code() == (
            grpc.StatusCode.UNAVAILABLE
        )
        host = await _register(
            plane.agent_port, pki.client_tls(pki.issue_host("id-b")), "id-b", cred_b
        )
        assert host.state == S.HOST_STATE_CLEANING  # only the right one got through


async def test_the_stream_closes_within_a_second_of_decommission(
    plane: InProcessControlPlane,
) -> None:
    pki = default_pki()
    async with plane.clients() as c:
        _, cred = await enroll(c, host_id="id-d", register=False)
        await c.operator.SetHostMaintenance(
            operator_pb2.SetHostMaintenanceRequest(name="hosts/id-d", maintenance=True),
            metadata=c.op_md,
        )
        async with Clients(plane.agent_port, tls=pki.client_tls(pki.issue_host("id-d"))) as a:
            call = a.agent.Connect(metadata=bearer(cred))
            first = await call.read()
            assert first.desired_state.state == S.HOST_STATE_MAINTENANCE
            started = time.monotonic()
            await c.operator.DecommissionHost(
                operator_pb2.HostActionRequest(name="hosts/id-d"), metadata=c.op_md
            )
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                while True:  # desired states until the stream is closed
                    msg = await call.read()
                    assert msg is not grpc.aio.EOF, "the stream ended without a status"
            took = time.monotonic() - started
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "decommissioned" in str(exc.value.details())
        assert took < 1.0, f"stream closed {took:.2f} s after the decommission"


async def test_the_stream_closes_within_a_second_of_a_credential_rotation(
    plane: InProcessControlPlane,
) -> None:
    """A retried enrolment of a host still ENROLLED rotates its credential
    (``EnrollHost``): a stream opened with the old one is closed."""
    pki = default_pki()
    req = operator_pb2.EnrollHostRequest(
        request_id="rotate-1",
        host=S.Host(
            name="hosts/id-r",
            zone="z1",
            rack="r1",
            host_class="c64",
            power_driver="fake",
            hardware=S.HardwareProfile(cpus=8, memory_gib=32),
        ),
    )
    async with plane.clients() as c:
        first = await c.operator.EnrollHost(req, metadata=c.op_md)
        async with Clients(plane.agent_port, tls=pki.client_tls(pki.issue_host("id-r"))) as a:
            call = a.agent.Connect(metadata=bearer(first.agent_credential))
            assert (await call.read()).desired_state.state == S.HOST_STATE_ENROLLED
            started = time.monotonic()
            second = await c.operator.EnrollHost(req, metadata=c.op_md)
            assert second.agent_credential != first.agent_credential
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                while True:
                    assert await call.read() is not grpc.aio.EOF
            took = time.monotonic() - started
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "rotated" in str(exc.value.details())
        assert took < 1.0, f"stream closed {took:.2f} s after the rotation"
