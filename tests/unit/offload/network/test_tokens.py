"""SessionTokens: issue, expiry, the bound on the table, randomness."""

from __future__ import annotations

import pytest

from offload.network.tokens import MAX_TTL, SessionTokens


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_issue_validate_expire() -> None:
    clock = Clock()
    tokens = SessionTokens(clock=clock)
    a = tokens.issue(10)
    b = tokens.issue(MAX_TTL)
    assert a != b and tokens.valid(a) and tokens.valid(b)
    assert not tokens.valid("") and not tokens.valid(a + "x")
    clock.now = 9.99
    assert tokens.valid(a)
    clock.now = 10.0
    assert not tokens.valid(a) and tokens.valid(b)
    assert len(tokens) == 1  # the expired one is gone


@pytest.mark.parametrize("ttl", [0, -1, MAX_TTL + 1])
def test_ttl_range(ttl: int) -> None:
    with pytest.raises(ValueError, match=r"outside 1\.\.21600"):
        SessionTokens(clock=Clock()).issue(ttl)


def test_table_is_bounded_and_evicts_the_soonest_to_expire() -> None:
    clock = Clock()
    tokens = SessionTokens(clock=clock, max_tokens=3)
    short = tokens.issue(5)
    longer = [tokens.issue(100) for _ in range(2)]
    newest = tokens.issue(100)
    assert len(tokens) == 3 and tokens.evicted == 1
    assert not tokens.valid(short) and all(tokens.valid(t) for t in [*longer, newest])
    clock.now = 200
    tokens.issue(1)  # purges the expired before counting
    assert len(tokens) == 1 and tokens.evicted == 1


def test_tokens_are_random() -> None:
    tokens = SessionTokens(clock=Clock(), max_tokens=1000)
    issued = {tokens.issue(60) for _ in range(1000)}
    assert len(issued) == 1000 and all(len(t) == 43 for t in issued)
