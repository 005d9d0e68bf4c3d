"""The control plane's and the agent's /metrics, scraped from real processes
during a workload, pass ``promtool check metrics`` and carry what the
dashboards and alerts need."""

from __future__ import annotations

import shutil
import subprocess

from tests.integration.observability.conftest import ObservedRegion, poll, scrape
from tests.integration.observability.promql import exposed_names


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: make system-deps installs Debian's prometheus"
    return path


def check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )


def test_control_plane_metrics_pass_promtool(observed_region: ObservedRegion) -> None:
    def counted() -> str:
        text = scrape(observed_region.cp_metrics_port)
        return text if 'bmaas_cp_instances{state="RUNNING"} 1.0' in text else ""

    text = poll(counted, 10, "the census to count the RUNNING instance")
    result = check_metrics(text)
    assert result.returncode == 0 and not result.stdout and not result.stderr, (
        result.stdout + result.stderr
    )
    names = exposed_names(text)
    for name in (
        "bmaas_cp_rpc_requests_total",
        "bmaas_cp_rpc_duration_seconds_bucket",
        "bmaas_cp_scheduling_duration_seconds_bucket",
        "bmaas_cp_etcd_request_duration_seconds_bucket",
        "bmaas_cp_controller_queue_depth",
        "bmaas_cp_controller_retries_total",
        "bmaas_cp_controller_reconcile_duration_seconds_count",
        "bmaas_cp_leader",
        "bmaas_cp_leader_terms_total",
        "bmaas_cp_hosts",
        "bmaas_cp_instances",
        "bmaas_cp_instance_oldest_transient_seconds",
    ):
        assert name in names, name
    assert 'bmaas_cp_instances{state="RUNNING"} 1.0' in text
    assert 'bmaas_cp_hosts{state="ALLOCATED"} 1.0' in text
    assert "bmaas_cp_leader 1.0" in text
    assert (
        'bmaas_cp_rpc_duration_seconds_count{code="OK",method="CreateInstance",'
        'service="TenantService"} 1.0'
    ) in text
    assert 'bmaas_cp_scheduling_duration_seconds_count{result="placed"} 1.0' in text


def test_agent_metrics_pass_promtool(observed_region: ObservedRegion) -> None:
    text = scrape(observed_region.agent_metrics_port)
    result = check_metrics(text)
    assert result.returncode == 0 and not result.stdout and not result.stderr, (
        result.stdout + result.stderr
    )
    names = exposed_names(text)
    assert "bmaas_agent_connected" in names
    assert "bmaas_agent_connected 1.0" in text
    assert "bmaas_agent_reconcile_seconds_bucket" in names
    # the device families are declared even with no device (the fake driver runs none)
    assert "bmaas_agent_device_io_bytes_total" in names
    assert "bmaas_agent_wipe_failures_total" in names
