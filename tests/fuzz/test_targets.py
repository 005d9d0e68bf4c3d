"""Every fuzz target replays its corpus and then fuzzes for a bounded number of executions.

Each target runs in its own process under libFuzzer (``fuzz.campaign.bounded``):
the whole of ``fuzz/corpus/<target>`` first (crash inputs found earlier
included), then mutations until ``RUNS`` executions, with a per-input
timeout.  A crash, a hang, an out-of-region access or a broken reply makes
the process exit non-zero and the test fail with libFuzzer's report.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fuzz.campaign import bounded, corpus_dir
from fuzz.targets import TARGETS

RUNS = 2000  # per target; at least 10,000 in all (checked below)
_SEED_CORPUS = re.compile(r"INFO: seed corpus: files: (\d+)")


def test_the_bounded_runs_add_up_to_ten_thousand_executions() -> None:
    assert len(TARGETS) * RUNS >= 10_000


@pytest.mark.parametrize("target", TARGETS)
def test_target_replays_its_corpus_and_fuzzes_without_a_failure(
    target: str, tmp_path: Path
) -> None:
    corpus = sorted(corpus_dir(target).iterdir())
    assert any(p.name.startswith("seed-") for p in corpus), f"{target} has no seeds"
    result = bounded(target, runs=RUNS, scratch=tmp_path)
    assert result.returncode == 0, f"{target} failed:\n{result.output[-6000:]}"
    assert result.executions >= RUNS
    replayed = _SEED_CORPUS.search(result.output)
    assert replayed is not None and int(replayed.group(1)) == len(corpus), result.output[-2000:]
