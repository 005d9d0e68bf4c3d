"""Every PromQL expression of the Grafana dashboard and of the alert rules
names only metrics that the real control plane and the real agent expose
(histogram ``_bucket``/``_sum``/``_count`` included), plus Prometheus's own
``up``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.integration.observability.conftest import ObservedRegion, poll, scrape
from tests.integration.observability.promql import exposed_names, metric_names
from tools.region.paths import ROOT

DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
#: series Prometheus makes itself for every target
SYNTHETIC = {"up"}


def dashboard_exprs(path: Path) -> Iterator[tuple[str, str]]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                yield f"{path.name}: {panel['title']} {target['refId']}", target["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(json.loads(path.read_text())["panels"])


def rule_exprs() -> list[tuple[str, str]]:
    """``(alert, expr)`` of every rule: ``expr:`` on one line or as a ``|``
    block (the file's only two forms; the count is checked against promtool's)."""
    lines = RULES.read_text().splitlines()
    found: list[tuple[str, str]] = []
    name = ""
    for i, line in enumerate(lines):
        if m := re.match(r"\s*- (?:alert|record): (\S+)", line):
            name = m.group(1)
        elif m := re.match(r"(\s*)expr: (.*)$", line):
            indent, value = len(m.group(1)), m.group(2).strip()
            if value in ("|", ">", "|-", ">-"):
                block = []
                for more in lines[i + 1 :]:
                    if more.strip() and len(more) - len(more.lstrip()) <= indent:
                        break
                    block.append(more.strip())
                value = " ".join(block)
            found.append((f"rules.yml: {name}", value))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: make system-deps installs Debian's prometheus"
    out = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    ).stdout
    assert f"SUCCESS: {len(found)} rules found" in out, out
    return found


def test_scanner_finds_names_not_functions_labels_or_keywords() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (op, le) (rate(x_bucket{op=~"Range|Txn"}[5m])))'
        " / on (op) group_left sum without (instance) (y_total offset 1h) > bool 0.25"
        ' and z{a="b(c)"} unless ignoring (le) w[$__rate_interval:1m]'
    )
    assert metric_names(expr) == {"x_bucket", "y_total", "z", "w"}


def test_every_query_names_exposed_metrics(observed_region: ObservedRegion) -> None:
    assert DASHBOARDS, "no dashboard in deploy/grafana"

    def census_in() -> str:
        text = scrape(observed_region.cp_metrics_port)
        return text if 'bmaas_cp_hosts{state="ALLOCATED"}' in text else ""

    exposed = (
        exposed_names(poll(census_in, 10, "the census"))
        | exposed_names(scrape(observed_region.agent_metrics_port))
        | SYNTHETIC
    )
    queries = [q for path in DASHBOARDS for q in dashboard_exprs(path)] + rule_exprs()
    assert len(queries) > 40
    unknown: dict[str, set[str]] = {}
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        if missing := names - exposed:
            unknown[where] = missing
    assert not unknown, unknown
