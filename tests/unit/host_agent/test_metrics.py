"""DeviceCollector: a NIC's stats file becomes verdict, drop-reason and metadata counters."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from host_agent.devices import Backend, NetSpec
from host_agent.metrics import DeviceCollector


def test_nic_drops_by_reason_and_metadata_refusals(tmp_path: Path) -> None:
    backend = Backend(NetSpec(id="nics/n1", socket=tmp_path / "n1.sock", tap="t1", mac="m"))
    backend.statsfile.write_text(
        json.dumps(
            {
                "tx_frames": 10,
                "tx_bytes": 1000,
                "rx_frames": 5,
                "rx_bytes": 500,
                "connected": True,
                "services": {"forwarded": 4, "dropped_spoofed": 3, "replies": 2},
                "drops": {"ipv6_src": 2, "ndp_lladdr": 1, "ethertype": 4},
                "metadata": {"tokens_issued": 1, "unauthorized": 6},
            }
        )
    )
    registry = CollectorRegistry()
    registry.register(DeviceCollector(lambda: [backend]))
    get = registry.get_sample_value
    labels = {"device": "nics/n1", "nic": "nics/n1"}
    assert get("bmaas_agent_nic_card_drops_total", {**labels, "reason": "ipv6_src"}) == 2
    assert get("bmaas_agent_nic_card_drops_total", {**labels, "reason": "ethertype"}) == 4
    assert get("bmaas_agent_nic_card_verdicts_total", {**labels, "verdict": "forwarded"}) == 4
    assert get("bmaas_agent_nic_card_verdicts_total", {**labels, "verdict": "replies"}) is None
    assert get("bmaas_agent_nic_metadata_unauthorized_total", labels) == 6
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: make system-deps installs Debian's prometheus"
    check = subprocess.run(
        [promtool, "check", "metrics"],
        input=generate_latest(registry).decode(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr
