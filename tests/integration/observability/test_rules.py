"""``promtool check rules``/``check config`` on deploy/prometheus and the
``promtool test rules`` unit tests in deploy/prometheus/tests (a missing
promtool fails: ``make system-deps`` installs Debian's prometheus)."""

from __future__ import annotations

import shutil
import subprocess

from tools.region.paths import ROOT

DEPLOY = ROOT / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    assert path, "promtool is missing: make system-deps installs Debian's prometheus"
    return subprocess.run([path, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120)


def test_rules_and_config_pass_promtool_check() -> None:
    rules = promtool("check", "rules", "rules.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_alert_unit_tests_pass() -> None:
    tests = sorted(p.name for p in (DEPLOY / "tests").glob("*.yml"))
    assert tests, "no promtool unit tests in deploy/prometheus/tests"
    result = promtool("test", "rules", *(f"tests/{t}" for t in tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
