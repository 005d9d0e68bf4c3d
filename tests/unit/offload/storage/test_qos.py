"""QosLimiter: token buckets driven by a hand-moved clock."""

from __future__ import annotations

import threading

import pytest

from offload.storage.qos import QosLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_unlimited_is_always_ready() -> None:
    q = QosLimiter()
    q.consume(10**6, 10**12)
    assert q.ready() and q.try_acquire(5, 5) and q.wait_time() == 0.0


def test_iops_bucket_overdraft_and_refill() -> None:
    clock = Clock()
    q = QosLimiter(iops=10, clock=clock)
    for _ in range(10):
        assert q.ready()
        q.consume()
    assert not q.ready()  # bucket exactly empty
    q.consume()  # overdraft by one
    assert q.wait_time() == pytest.approx(0.1, rel=1e-3)
    clock.now += 0.05
    assert not q.ready()
    clock.now += 0.06
    assert q.ready()
    assert q.throttled_total == 2


def test_bytes_bucket_debt_delays_the_next_request() -> None:
    clock = Clock()
    q = QosLimiter(bytes_per_second=1000, clock=clock)
    assert q.ready()
    q.consume(1, 3000)  # one big request goes ahead on overdraft
    assert not q.ready()
    assert q.wait_time() == pytest.approx(2.0, rel=1e-3)
    clock.now += 2.01
    assert q.ready()


def test_burst_caps_accumulation() -> None:
    clock = Clock()
    q = QosLimiter(iops=10, iops_burst=2, clock=clock)
    clock.now += 100
    assert q.try_acquire() and q.try_acquire()
    assert not q.try_acquire()


def test_try_acquire_checks_every_bucket() -> None:
    clock = Clock()
    q = QosLimiter(iops=100, bytes_per_second=100, clock=clock)
    assert not q.try_acquire(1, 101)
    assert q.try_acquire(1, 100)
    assert not q.try_acquire(1, 1)
    clock.now += 0.5
    assert q.try_acquire(1, 50)


def test_invalid_rates() -> None:
    with pytest.raises(ValueError):
        QosLimiter(iops=0)
    with pytest.raises(ValueError):
        QosLimiter(bytes_per_second=10, bytes_burst=0)


def test_thread_safe_accounting() -> None:
    clock = Clock()
    q = QosLimiter(iops=1000, iops_burst=1000, clock=clock)

    def worker() -> None:
        for _ in range(250):
            q.consume()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not q.ready()  # exactly 1000 tokens were charged
    clock.now += 0.0011
    assert q.ready()
