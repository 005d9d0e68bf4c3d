"""Token-bucket QoS for volumes: IOPS and bytes per second.

Each limit is a bucket that refills continuously at ``rate`` tokens per
second up to ``burst`` tokens (default: one second's worth).  A device asks
``ready()`` before it pops a request and then ``consume``s what the request
really costs once it has parsed it; a bucket may go negative (overdraft), so
a request is never split or un-popped, and the debt delays the next one.
``wait_time()`` says how long until every bucket is positive again, which
the server uses to re-run the queue.  This is the "check before, charge
after" scheme: the long-run rate is exact and a single large request never
stalls forever.

All state sits behind one lock (queue threads share a device's limiter); the
clock is injectable so tests drive time by hand.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["QosLimiter", "TokenBucket"]


class TokenBucket:
    """One refilling bucket; not thread-safe on its own (QosLimiter locks)."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float | None, now: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.rate = rate
        self.burst = rate if burst is None else burst
        if self.burst <= 0:
            raise ValueError(f"burst must be positive, not {self.burst}")
        self.tokens = self.burst
        self.last = now

    def refill(self, now: float) -> None:
        elapsed = now - self.last
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.last = now

    def wait_time(self) -> float:
        return 0.0 if self.tokens > 0 else (-self.tokens + 1e-9) / self.rate


class QosLimiter:
    """IOPS and bandwidth limits for one volume; ``None`` means unlimited."""

    def __init__(
        self,
        *,
        iops: float | None = None,
        bytes_per_second: float | None = None,
        iops_burst: float | None = None,
        bytes_burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._ios = None if iops is None else TokenBucket(iops, iops_burst, now)
        self._bytes = (
            None if bytes_per_second is None else TokenBucket(bytes_per_second, bytes_burst, now)
        )
        self._buckets = tuple(b for b in (self._ios, self._bytes) if b is not None)
        self.throttled_total = 0

    def _refill(self) -> None:
        now = self._clock()
        for bucket in self._buckets:
            bucket.refill(now)

    def ready(self) -> bool:
        """Whether a new request may start now."""
        if not self._buckets:
            return True
        with self._lock:
            self._refill()
            ok = all(b.tokens > 0 for b in self._buckets)
            if not ok:
                self.throttled_total += 1
            return ok

    def consume(self, ios: int = 1, nbytes: int = 0) -> None:
        """Charge a request that is going ahead (buckets may go negative)."""
        if not self._buckets:
            return
        with self._lock:
            self._refill()
            if self._ios is not None:
                self._ios.tokens -= ios
            if self._bytes is not None:
                self._bytes.tokens -= nbytes

    def try_acquire(self, ios: int = 1, nbytes: int = 0) -> bool:
        """Charge only if every bucket holds enough tokens right now."""
        if not self._buckets:
            return True
        with self._lock:
            self._refill()
            if (self._ios is not None and self._ios.tokens < ios) or (
                self._bytes is not None and self._bytes.tokens < nbytes
            ):
                self.throttled_total += 1
                return False
            if self._ios is not None:
                self._ios.tokens -= ios
            if self._bytes is not None:
                self._bytes.tokens -= nbytes
            return True

    def wait_time(self) -> float:
        """Seconds until ``ready()`` turns true (0 when it already is)."""
        if not self._buckets:
            return 0.0
        with self._lock:
            self._refill()
            return max(b.wait_time() for b in self._buckets)
