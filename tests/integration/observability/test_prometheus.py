"""A real Prometheus server (Debian ``prometheus``) scrapes a real control
plane and a real agent during a workload; the test asks Prometheus's HTTP
API for what the workload did: instances by state, RPC counts, the agent's
connection, and the alert rules loaded and healthy.

The agent runs the fake power driver without devices (no data plane), so
device I/O bytes are not asserted here: the e2e tests read them from a real
back-end (tests/e2e/test_agent_guest.py).  Prometheus gets a free loopback
port, a generated config and a temp storage dir, all removed afterwards."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bmaas.v1 import tenant_pb2, tenant_pb2_grpc
from bmaas_tls import sync_channel
from tests.integration.observability.conftest import ObservedRegion, poll
from tools.region.paths import ROOT
from tools.region.pki import default_pki
from tools.region.ports import free_port

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
SCRAPE_INTERVAL = "1s"


@dataclass
class PrometheusServer:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Instant query: labels (sorted, ``__name__`` dropped) -> value."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return {
            tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__")): float(
                r["value"][1]
            )
            for r in data["result"]
        }

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        assert len(result) <= 1, result
        return next(iter(result.values()), None)

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


@pytest.fixture(scope="module")
def prometheus(observed_region: ObservedRegion) -> Iterator[PrometheusServer]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: make system-deps installs Debian's prometheus"
    work = Path(tempfile.mkdtemp(prefix="bmaas-prometheus-"))
    port = free_port()
    config = work / "prometheus.yml"
    config.write_text(
        f"""global:
  scrape_interval: {SCRAPE_INTERVAL}
  evaluation_interval: {SCRAPE_INTERVAL}
rule_files:
  - {RULES}
scrape_configs:
  - job_name: bmaas-control-plane
    static_configs:
      - targets: ["127.0.0.1:{observed_region.cp_metrics_port}"]
  - job_name: bmaas-agent
    static_configs:
      - targets: ["127.0.0.1:{observed_region.agent_metrics_port}"]
"""
    )
    log = work / "prometheus.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = PrometheusServer(port, proc, log)
    try:

        def ready() -> bool:
            assert proc.poll() is None, f"prometheus exited {proc.returncode}: {server.tail()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        poll(ready, 30, "prometheus to be ready")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def test_targets_up_and_rules_loaded(prometheus: PrometheusServer) -> None:
    def both_up() -> dict[tuple[tuple[str, str], ...], float]:
        up = prometheus.query("up")
        return up if len(up) == 2 and all(v == 1.0 for v in up.values()) else {}

    up = poll(both_up, 20, "both targets up")
    assert {dict(k)["job"] for k in up} == {"bmaas-control-plane", "bmaas-agent"}
    rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
    assert len(rules) >= 10 and all(r["health"] == "ok" for r in rules), rules
    names = {r["name"] for r in rules}
    assert {
        "BmaasHostUnreachable",
        "BmaasInstanceStuck",
        "BmaasCardDeviceErrors",
        "BmaasWipeFailures",
        "BmaasEtcdSlow",
        "BmaasLeaderChurn",
    } <= names
    # nothing is wrong in this region: no alert fires
    firing = [a for a in prometheus.api("alerts")["alerts"] if a["state"] == "firing"]
    assert not firing, firing


def test_prometheus_sees_the_workload(
    observed_region: ObservedRegion, prometheus: PrometheusServer
) -> None:
    # what the fixture's workload left: one RUNNING instance on an ALLOCATED host
    def running() -> dict[tuple[tuple[str, str], ...], float]:
        got = prometheus.query("sum by (state) (bmaas_cp_instances)")
        return got if got.get((("state", "RUNNING"),)) == 1.0 else {}

    by_state = poll(running, 20, "Prometheus to see one RUNNING instance")
    assert sum(by_state.values()) == 1.0, by_state
    assert prometheus.scalar('sum(bmaas_cp_hosts{state="ALLOCATED"})') == 1.0
    assert prometheus.scalar('sum(bmaas_agent_connected{job="bmaas-agent"})') == 1.0
    assert prometheus.scalar("sum(bmaas_cp_agent_streams)") == 1.0
    created = (
        'sum(bmaas_cp_rpc_requests_total{service="TenantService",'
        'method="CreateInstance",code="OK"})'
    )
    assert prometheus.scalar(created) == 1.0
    assert (
        prometheus.scalar('sum(bmaas_cp_scheduling_duration_seconds_count{result="placed"})') == 1.0
    )

    # more workload while Prometheus scrapes: N reads, then terminate the instance
    gets = (
        'sum(bmaas_cp_rpc_requests_total{service="TenantService",method="GetInstance",code="OK"})'
    )
    before = prometheus.scalar(gets)
    assert before is not None and before >= observed_region.calls["GetInstance"]
    n = 7
    endpoint = f"127.0.0.1:{observed_region.cp_port}"
    with sync_channel(endpoint, default_pki().client_tls()) as channel:
        tenant = tenant_pb2_grpc.TenantServiceStub(channel)
        for _ in range(n):
            tenant.GetInstance(
                tenant_pb2.GetRequest(name=observed_region.instance),
                metadata=observed_region.tenant_md,
                timeout=10,
            )
        tenant.TerminateInstance(
            tenant_pb2.InstanceActionRequest(
                name=observed_region.instance, request_id=str(uuid.uuid4())
            ),
            metadata=observed_region.tenant_md,
            timeout=10,
        )
    poll(lambda: prometheus.scalar(gets) == before + n, 20, f"GetInstance count +{n}")
    terminate = (
        'sum(bmaas_cp_rpc_requests_total{service="TenantService",'
        'method="TerminateInstance",code="OK"})'
    )
    poll(lambda: prometheus.scalar(terminate) == 1.0, 20, "one TerminateInstance")
    poll(
        lambda: (
            prometheus.scalar('sum(bmaas_cp_instances{state="TERMINATED"})') == 1.0
            and prometheus.scalar('sum(bmaas_cp_instances{state="RUNNING"})') == 0.0
        ),
        30,
        "Prometheus to see the instance TERMINATED",
    )
    # the latency histogram counted every call it saw, by code
    p99 = prometheus.scalar(
        "histogram_quantile(0.99, sum by (le) (rate("
        'bmaas_cp_rpc_duration_seconds_bucket{method="GetInstance",code="OK"}[1m])))'
    )
    assert p99 is not None and 0 < p99 < 5, p99
