"""The keyed work queue: one in-flight pass per key, dedup, backoff, rate
limit, Permanent handling and resync (real asyncio, short delays)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time

from control_plane.controllers.outcome import DONE, Outcome, Permanent, Transient
from control_plane.controllers.ratelimit import TokenBucket
from control_plane.controllers.workqueue import WorkQueue


async def _until(pred: object, timeout: float = 5.0) -> None:
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_at_most_one_pass_per_key_and_events_during_a_pass_rerun_it() -> None:
    running: set[str] = set()
    overlaps = 0
    calls: collections.Counter[str] = collections.Counter()
    gate = asyncio.Event()

    async def handler(key: str) -> Outcome:
        nonlocal overlaps
        if key in running:
            overlaps += 1
        running.add(key)
        calls[key] += 1
        if calls[key] == 1:
            await gate.wait()
        running.discard(key)
        return DONE

    async with WorkQueue(handler, workers=4) as q:
        q.add("a")
        await _until(lambda: calls["a"] == 1)
        for _ in range(10):
            q.add("a")  # while a pass is in flight: coalesced into ONE rerun
        gate.set()
        await _until(lambda: calls["a"] == 2)
        await q.join()
    assert overlaps == 0
    assert calls["a"] == 2


async def test_queued_keys_are_deduplicated() -> None:
    calls: collections.Counter[str] = collections.Counter()

    async def handler(key: str) -> Outcome:
        calls[key] += 1
        return DONE

    q = WorkQueue(handler, workers=1)
    for _ in range(5):
        q.add("k")
        q.add("j")
    assert len(q) == 2
    async with q:
        await q.join()
    assert calls == {"k": 1, "j": 1}


async def test_transient_backs_off_exponentially_then_done_resets() -> None:
    stamps: list[float] = []

    async def handler(key: str) -> Outcome:
        stamps.append(time.monotonic())
        return DONE if len(stamps) == 4 else Transient()

    async with WorkQueue(handler, base_delay=0.02, max_delay=1.0) as q:
        q.add("k")
        await _until(lambda: len(stamps) == 4)
        await q.join()
        assert q.backoff("k") == 0.02  # reset by Done
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps[0] >= 0.018 and gaps[1] >= 0.038 and gaps[2] >= 0.078
    assert gaps[2] > gaps[0] * 2


async def test_exceptions_count_as_transient_and_explicit_delays_do_not_grow_backoff() -> None:
    calls = 0

    async def handler(key: str) -> Outcome:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        if calls < 4:
            return Transient(delay=0.01)
        return DONE

    async with WorkQueue(handler, base_delay=0.01) as q:
        q.add("k")
        await _until(lambda: calls == 4)
        await q.join()
        assert q.stats.errors == 1 and q.stats.retried == 3 and q.stats.succeeded == 1


async def test_max_delay_caps_the_backoff() -> None:
    async def handler(key: str) -> Outcome:
        return Transient()

    q = WorkQueue(handler, base_delay=0.5, max_delay=2.0)
    q._failures["k"] = 20
    assert q.backoff("k") == 2.0
    q.forget("k")
    assert q.backoff("k") == 0.5


async def test_permanent_calls_the_hook_once_and_drops_the_key() -> None:
    calls = 0
    reported: list[tuple[str, str]] = []

    async def handler(key: str) -> Outcome:
        nonlocal calls
        calls += 1
        return Permanent("image is gone")

    async def hook(key: str, reason: str) -> None:
        reported.append((key, reason))

    async with WorkQueue(handler, on_permanent=hook, base_delay=0.01) as q:
        q.add("k")
        await _until(lambda: bool(reported))
        await asyncio.sleep(0.05)
        await q.join()
    assert calls == 1
    assert reported == [("k", "image is gone")]


async def test_global_rate_limit_bounds_throughput() -> None:
    done = 0

    async def handler(key: str) -> Outcome:
        nonlocal done
        done += 1
        return DONE

    async with WorkQueue(handler, workers=8, rate=100.0, burst=5) as q:
        started = time.monotonic()
        for i in range(25):
            q.add(f"k{i}")
        await q.join()
        elapsed = time.monotonic() - started
    assert done == 25
    assert elapsed >= 0.17  # 5 from the burst, 20 more at 100/s


async def test_periodic_resync_requeues_keys() -> None:
    seen: collections.Counter[str] = collections.Counter()

    async def handler(key: str) -> Outcome:
        seen[key] += 1
        return DONE

    async def resync() -> list[str]:
        return ["x", "y"]

    async with WorkQueue(handler, resync=resync, resync_period=0.02):
        await _until(lambda: seen["x"] >= 2 and seen["y"] >= 2)


async def test_add_after_keeps_the_earliest_timer_and_close_cancels_everything() -> None:
    calls: list[float] = []

    async def handler(key: str) -> Outcome:
        calls.append(time.monotonic())
        return DONE

    q = WorkQueue(handler)
    await q.start()
    t0 = time.monotonic()
    q.add_after("k", 0.3)
    q.add_after("k", 0.02)
    q.add_after("k", 0.5)
    await _until(lambda: len(calls) == 1)
    assert calls[0] - t0 < 0.25
    q.add_after("late", 0.05)
    await q.aclose()
    await asyncio.sleep(0.1)
    assert len(calls) == 1
    q.add("after-close")
    assert len(q) == 0


async def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(10.0, 2, clock=lambda: now[0])
    assert bucket.try_acquire() and bucket.try_acquire()
    assert not bucket.try_acquire()
    now[0] = 0.1
    assert bucket.try_acquire()
    assert not bucket.try_acquire()
