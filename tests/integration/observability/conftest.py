"""A small region whose processes serve /metrics: etcd, one control plane
(``bmaas-control-plane --metrics``) and one ``bmaas-agent --metrics`` on the
fake power driver, with one instance created through the tenant API and
driven to RUNNING by the agent's reports.  Module-scoped: the tests of a
module scrape the same region.  Everything here is a real process; the
gRPC calls use the synchronous client (no event loop to share)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from bmaas.v1 import common_pb2, operator_pb2, operator_pb2_grpc, tenant_pb2, tenant_pb2_grpc
from bmaas_tls import sync_channel
from tools.region.agents import AGENT_RUN_ROOT, tls_flags
from tools.region.control_plane import OPERATOR_TOKEN, ControlPlaneProcess, bearer
from tools.region.etcd import EtcdServer
from tools.region.paths import ROOT
from tools.region.pki import default_pki
from tools.region.ports import free_port

#: the control plane counts hosts and instances this often (BMAAS_CENSUS_INTERVAL)
CENSUS_INTERVAL = 1.0


class MetricsAgent:
    """``bmaas-agent --metrics 127.0.0.1:PORT`` on the fake power driver."""

    def __init__(self, *, endpoint: str, host_id: str, credential: str, state_dir: Path) -> None:
        self.metrics_port = free_port()
        self.state_dir = state_dir
        self.log = Path(tempfile.mkstemp(prefix="bmaas-agent-metrics-", suffix=".log")[1])
        state_dir.mkdir(parents=True, exist_ok=True)
        cred = state_dir / "credential"
        cred.write_text(credential + "\n")
        cred.chmod(0o600)
        toml = state_dir / "agent.toml"
        toml.write_text(
            'power_driver = "fake"\nresync = 0.5\nmax_backoff = 1.0\n'
            f'run_dir = "{AGENT_RUN_ROOT / ("obs-" + uuid.uuid4().hex[:8])}"\n'
        )
        args = [
            sys.executable,
            "-m",
            "host_agent.main",
            "--control-plane",
            endpoint,
            "--host-id",
            host_id,
            "--credential-file",
            str(cred),
            "--state-dir",
            str(state_dir / "state"),
            "--config",
            str(toml),
            "--metrics",
            f"127.0.0.1:{self.metrics_port}",
            *tls_flags(default_pki().client_tls()),
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.unlink(missing_ok=True)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def poll(predicate, timeout: float = 30.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} not met within {timeout}s (last: {last!r})")


@dataclass
class ObservedRegion:
    cp_port: int
    cp_metrics_port: int
    agent_metrics_port: int
    tenant: str
    tenant_md: tuple[tuple[str, str], ...]
    instance: str
    #: unary tenant/operator calls made by the fixture (ok ones), by method
    calls: dict[str, int]


@pytest.fixture(scope="module")
def observed_region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedRegion]:
    cp_metrics_port = free_port()
    os.environ["BMAAS_CENSUS_INTERVAL"] = str(CENSUS_INTERVAL)
    try:
        with (
            EtcdServer() as etcd,
            ControlPlaneProcess(
                etcd,
                allow_fake_power=True,
                extra_args=("--metrics", f"127.0.0.1:{cp_metrics_port}"),
            ) as cp,
        ):
            yield from _with_world(cp, cp_metrics_port, tmp_path_factory.mktemp("observed"))
    finally:
        os.environ.pop("BMAAS_CENSUS_INTERVAL", None)


def _with_world(
    cp: ControlPlaneProcess, cp_metrics_port: int, state_root: Path
) -> Iterator[ObservedRegion]:
    endpoint = f"127.0.0.1:{cp.port}"
    calls: dict[str, int] = {}
    with sync_channel(endpoint, cp.client_tls) as channel:
        op = operator_pb2_grpc.OperatorServiceStub(channel)
        tenant_api = tenant_pb2_grpc.TenantServiceStub(channel)
        md = bearer(OPERATOR_TOKEN)

        def count(method: str) -> None:
            calls[method] = calls.get(method, 0) + 1

        tenant = op.CreateTenant(
            operator_pb2.CreateTenantRequest(
                tenant=common_pb2.Tenant(
                    name="tenants/obs",
                    quota=common_pb2.Quota(max_instances=10, max_volume_gib=100),
                )
            ),
            metadata=md,
            timeout=10,
        )
        count("CreateTenant")
        token = op.IssueTenantToken(
            operator_pb2.IssueTenantTokenRequest(tenant=tenant.name), metadata=md, timeout=10
        ).token
        count("IssueTenantToken")
        itype = op.CreateInstanceType(
            operator_pb2.CreateInstanceTypeRequest(
                instance_type=common_pb2.InstanceType(
                    name="instanceTypes/bm-c64", host_class="c64", cpus=64, memory_gib=256
                )
            ),
            metadata=md,
            timeout=10,
        )
        count("CreateInstanceType")
        image = op.RegisterImage(
            operator_pb2.RegisterImageRequest(
                image=common_pb2.Image(
                    name="images/debian-12", os="debian-12", source_uri="file:///images/d12.raw"
                )
            ),
            metadata=md,
            timeout=10,
        )
        count("RegisterImage")
        enrolled = op.EnrollHost(
            operator_pb2.EnrollHostRequest(
                request_id=str(uuid.uuid4()),
                host=common_pb2.Host(
                    name="hosts/obs-h0",
                    zone="z1",
                    rack="r1",
                    host_class="c64",
                    power_driver="fake",
                    hardware=common_pb2.HardwareProfile(cpus=64, memory_gib=256),
                ),
            ),
            metadata=md,
            timeout=10,
        )
        count("EnrollHost")
        agent = MetricsAgent(
            endpoint=endpoint,
            host_id="obs-h0",
            credential=enrolled.agent_credential,
            state_dir=state_root / "obs-h0",
        )
        try:
            tmd = bearer(token)

            def create() -> str:
                try:
                    inst = tenant_api.CreateInstance(
                        tenant_pb2.CreateInstanceRequest(
                            request_id=str(uuid.uuid4()),
                            instance=common_pb2.Instance(
                                name=f"{tenant.name}/instances/web",
                                instance_type=itype.name,
                                image=image.name,
                            ),
                        ),
                        metadata=tmd,
                        timeout=10,
                    )
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:  # type: ignore[attr-defined]
                        raise
                    return ""  # the agent has not made the host AVAILABLE yet
                return str(inst.name)

            try:
                name = poll(create, 30, "the host to become AVAILABLE")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; agent log:\n{agent.tail()}") from None
            count("CreateInstance")

            def running() -> bool:
                inst = tenant_api.GetInstance(
                    tenant_pb2.GetRequest(name=name), metadata=tmd, timeout=10
                )
                count("GetInstance")
                return bool(inst.state == common_pb2.INSTANCE_STATE_RUNNING)

            poll(running, 30, "the instance to reach RUNNING")
            yield ObservedRegion(
                cp_port=cp.port,
                cp_metrics_port=cp_metrics_port,
                agent_metrics_port=agent.metrics_port,
                tenant=tenant.name,
                tenant_md=tmd,
                instance=name,
                calls=calls,
            )
        finally:
            agent.close()
