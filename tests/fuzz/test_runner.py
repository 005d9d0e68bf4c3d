"""The runner turns a crash, a hang and an out-of-region write into a failure.

``tests.fuzz.broken`` misbehaves on one input; the corpus replayed by
``bounded`` holds that input, so the failure is found on replay.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.campaign import bounded
from tests.fuzz.broken import TRIGGER


@pytest.mark.parametrize(
    ("mode", "report"),
    [
        ("crash", "RuntimeError: the target crashed on purpose"),
        ("hang", "libFuzzer: timeout"),
        ("out-of-region", "OutOfRegionAccess"),
    ],
)
def test_a_misbehaving_target_fails_the_run(
    mode: str, report: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BMAAS_FUZZ_BROKEN", mode)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "harmless").write_bytes(b"hello")
    (corpus / "trigger").write_bytes(TRIGGER)
    result = bounded(
        "tests.fuzz.broken", runs=10, corpus=corpus, scratch=tmp_path / "run", timeout_s=2
    )
    assert result.returncode != 0
    assert report in result.output, result.output[-3000:]
    artifacts = list((tmp_path / "run" / "artifacts").iterdir())
    assert [a.read_bytes() for a in artifacts] == [TRIGGER]


def test_a_well_behaved_run_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BMAAS_FUZZ_BROKEN", "crash")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "harmless").write_bytes(b"hello")
    result = bounded(
        "tests.fuzz.broken", runs=200, corpus=corpus, scratch=tmp_path / "run", timeout_s=2
    )
    assert result.returncode == 0, result.output[-3000:]
    assert result.executions == 200
