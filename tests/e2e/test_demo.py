"""``make demo`` brings a whole region up and ``make demo-down`` leaves nothing behind.

Runs ``python -m tools.demo up`` (what ``make demo`` runs after installing
what it needs) twice in a row, the second time with Prometheus as ``make
demo PROMETHEUS=1`` does, and checks what the second showed (both instances
booted, got their addresses from their cards, pinged each other; the volume
grew online; the bmctl hints; Prometheus scrapes the control plane and both
agents), then ``down``, and checks that no process, namespace, socket or
file of the demo is left.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tools.region.paths import ROOT

DEMO = ROOT / ".demo"
RUN_DIR = Path("/run/bmaas-demo")


def _demo(action: str, timeout: float, *flags: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tools.demo", action, *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    return out


def _targets_up(prometheus: str) -> dict[str, int]:
    """Prometheus's healthy scrape targets per job (waits for a first scrape)."""
    deadline = time.monotonic() + 60
    up: dict[str, int] = {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{prometheus}/api/v1/targets", timeout=5) as resp:
            targets = json.load(resp)["data"]["activeTargets"]
        up = {}
        for t in targets:
            if t["health"] == "up":
                up[t["labels"]["job"]] = up.get(t["labels"]["job"], 0) + 1
        if sum(up.values()) == len(targets) == 3:
            return up
        time.sleep(1)
    return up


def _leftovers() -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if (str(DEMO) in cmd or str(RUN_DIR) in cmd) and "tools.demo" not in cmd:
                found.append(f"process {proc.name}: {cmd[:120]}")
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"namespace {n}" for n in re.findall(r"^(bmaas-demo-\S+)", netns, flags=re.M)]
    found += [f"path {p}" for p in (DEMO, RUN_DIR) if p.exists()]
    return found


def test_demo_twice_then_down_leaves_nothing_behind() -> None:
    try:
        first = _demo("up", 900)
        assert first.count("3 packets transmitted, 3 packets received, 0% packet loss") == 2
        # `make demo` again while the first region runs: it takes that one down first
        out = _demo("up", 900, "--prometheus")  # what `make demo PROMETHEUS=1` runs
        assert "a previous demo region is recorded: taking it down first" in out
        for i in (1, 2):
            assert f"tenants/demo/instances/web-{i} console" in out
        assert out.count("(DHCP from the card)") == 2
        assert out.count("3 packets transmitted, 3 packets received, 0% packet loss") == 2
        assert "volume /dev/vdc is 2147483648 bytes" in out
        assert "export BMAAS_ENDPOINT=" in out and "make demo-down" in out
        url = re.search(r"Prometheus: (http://127\.0\.0\.1:\d+)", out)
        assert url is not None, out[-2000:]
        assert _targets_up(url.group(1)) == {"bmaas-control-plane": 1, "bmaas-agent": 2}
        # the region keeps running after `up`, and the oracle below sees it
        running = _leftovers()
        assert any(x.startswith("process") for x in running), running
        assert any(x.startswith("namespace") for x in running), running
    finally:
        down = _demo("down", 300)
    assert "removing what is left" in down
    assert _leftovers() == []
