"""`make protos` output is reproducible: the committed tree matches a fresh run."""

from __future__ import annotations

from tools import genprotos


def test_committed_generated_code_matches_fresh_generation() -> None:
    assert genprotos.check() == 0
