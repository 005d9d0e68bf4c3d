"""Housekeeper: which revision it compacts to, and when it disarms NOSPACE."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from control_plane.controllers.housekeeping import TOKEN_RECORD_KEEP, Housekeeper
from control_plane.store import Store


@dataclass
class FakeKV:
    revision: int = 10
    alarms_raised: list[str] = field(default_factory=list)
    size_after_defrag: int = 1000
    calls: list[tuple[str, Any]] = field(default_factory=list)

    async def alarms(self) -> list[str]:
        return list(self.alarms_raised)

    async def range(self, *_: Any, **__: Any) -> tuple[list[Any], bool, int]:
        return [], False, self.revision

    async def compact(self, revision: int) -> None:
        self.calls.append(("compact", revision))

    async def defragment(self) -> None:
        self.calls.append(("defragment", None))

    async def db_size(self) -> int:
        return self.size_after_defrag

    async def disarm(self, alarm: str) -> None:
        self.calls.append(("disarm", alarm))
        self.alarms_raised.remove(alarm)


class FakeKeys:
    root = "/bmaas"


class FakeTokens:
    def __init__(self) -> None:
        self.cutoffs: list[float] = []

    async def purge(self, *, ended_before: float) -> int:
        self.cutoffs.append(ended_before)
        return 0


class FakeStore:
    def __init__(self, kv: FakeKV) -> None:
        self.kv = kv
        self.keys = FakeKeys()
        self.tenant_tokens = FakeTokens()


def _keeper(kv: FakeKV, clock: list[float], **kw: Any) -> Housekeeper:
    return Housekeeper(
        cast(Store, FakeStore(kv)), retention=60.0, clock=lambda: clock[0], quota_bytes=10_000, **kw
    )


async def test_compacts_to_the_newest_revision_older_than_the_retention() -> None:
    kv, clock = FakeKV(), [0.0]
    keeper = _keeper(kv, clock)
    for t, rev in ((0, 10), (30, 20), (61, 30), (95, 40)):
        clock[0], kv.revision = float(t), rev
        await keeper.run_once()
    # at 61 s only the revision seen at 0 s is old enough; at 95 s the one seen at 30 s
    assert kv.calls == [("compact", 10), ("compact", 20)]
    assert keeper.compacted == 20
    clock[0] = 96.0
    await keeper.run_once()  # nothing newly old enough: no compaction
    assert kv.calls == [("compact", 10), ("compact", 20)]


async def test_nospace_is_disarmed_only_when_defragmentation_freed_enough() -> None:
    kv, clock = FakeKV(revision=77, alarms_raised=["NOSPACE"], size_after_defrag=9_500), [0.0]
    keeper = _keeper(kv, clock, members=3)
    await keeper.run_once()
    assert kv.calls == [("compact", 77)] + [("defragment", None)] * 3
    assert kv.alarms_raised == ["NOSPACE"]  # still 95% full: the operator must act
    kv.calls.clear()
    kv.size_after_defrag = 2_000
    await keeper.run_once()
    assert kv.calls[-1] == ("disarm", "NOSPACE")
    assert kv.alarms_raised == []


async def test_token_records_ended_over_30_days_ago_are_purged_each_pass() -> None:
    kv, clock = FakeKV(), [0.0]
    store = FakeStore(kv)
    keeper = Housekeeper(cast(Store, store), clock=lambda: clock[0], wall_clock=lambda: 5e9)
    await keeper.run_once()
    await keeper.run_once()
    assert store.tenant_tokens.cutoffs == [5e9 - TOKEN_RECORD_KEEP] * 2
    assert TOKEN_RECORD_KEEP == 30 * 24 * 3600
