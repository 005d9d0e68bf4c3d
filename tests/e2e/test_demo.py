"""`make demo` runs end to end: both parts finish and their checks hold."""

from __future__ import annotations

import subprocess
import sys

from tests.harness.guest import ROOT


def test_demo_runs_both_parts_and_cleans_up() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tools.demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "tenants/acme/instances/web-1 is RUNNING" in out
    assert "NOT_FOUND" in out and "INVALID_ARGUMENT" in out
    assert "is TERMINATED" in out
    assert "guest write == guest read-back == host file: yes" in out
    assert "guest now sees 262144 sectors" in out
    assert "demo finished" in out
