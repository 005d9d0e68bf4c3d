"""A keyed work queue (client-go ``workqueue`` + kopf ``queueing``).

The queue holds *keys*, never objects: the handler re-reads current state by
key.  Guarantees:

- **at most one in-flight task per key**: adding a key that is being
  processed marks it *dirty*; it is queued again when the current pass ends;
- **dedup**: a key waiting in the queue is not queued twice;
- **per-key exponential backoff**: ``Transient()`` (or an exception; an
  ``Unavailable`` one -- etcd down, leadership lost -- is not logged per key:
  the store logs the outage once) requeues
  after ``base_delay * 2**failures`` (capped at ``max_delay``);
  ``Transient(delay)`` requeues after exactly *delay* without growing the
  backoff; ``Done`` resets it; ``Permanent`` resets it, calls
  ``on_permanent(key, reason)`` (the controller sets a condition) and drops
  the key;
- **global rate limit**: a token bucket gates every dequeue;
- **periodic resync**: every ``resync_period`` seconds ``resync()`` returns
  keys to add (level-triggered safety net for missed events).

``workers`` tasks pull keys concurrently.  ``aclose()`` cancels workers,
timers and the resync task; queued keys are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from control_plane import metrics
from control_plane.controllers.outcome import Done, Outcome, Permanent, Transient
from control_plane.controllers.ratelimit import TokenBucket
from control_plane.domain.errors import Unavailable

log = logging.getLogger(__name__)

Handler = Callable[[str], Awaitable[Outcome]]
PermanentHook = Callable[[str, str], Awaitable[None]]
Resync = Callable[[], Awaitable[Iterable[str]]]


@dataclass(slots=True)
class QueueStats:
    processed: int = 0
    succeeded: int = 0
    retried: int = 0
    permanent: int = 0
    errors: int = 0


class WorkQueue:
    def __init__(
        self,
        handler: Handler,
        *,
        name: str = "queue",
        workers: int = 4,
        base_delay: float = 0.05,
        max_delay: float = 30.0,
        rate: float = 1000.0,
        burst: int = 100,
        resync: Resync | None = None,
        resync_period: float = 30.0,
        on_permanent: PermanentHook | None = None,
    ) -> None:
        self.name = name
        self._handler = handler
        self._workers_n = workers
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._bucket = TokenBucket(rate, burst)
        self._resync = resync
        self._resync_period = resync_period
        self._on_permanent = on_permanent
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._failures: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.stats = QueueStats()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        for i in range(self._workers_n):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"{self.name}-w{i}"))
        if self._resync is not None:
            self._tasks.append(asyncio.create_task(self._resync_loop(), name=f"{self.name}-rs"))

    async def aclose(self) -> None:
        self._closed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def __aenter__(self) -> WorkQueue:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- producers ----------------------------------------------------------------------------

    def add(self, key: str) -> None:
        """Queue *key* now (deduplicated; deferred if it is being processed)."""
        if self._closed:
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._idle.clear()
        self._ready.put_nowait(key)

    def add_after(self, key: str, delay: float) -> None:
        """Queue *key* after *delay* seconds (an earlier pending timer wins)."""
        if self._closed:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        existing = self._timers.get(key)
        if existing is not None:
            if existing.when() <= when:
                return
            existing.cancel()
        self._idle.clear()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)
        self._check_idle()

    def forget(self, key: str) -> None:
        """Reset *key*'s backoff."""
        self._failures.pop(key, None)

    def backoff(self, key: str) -> float:
        """The delay the next failure of *key* will wait."""
        return float(min(self.base_delay * 2.0 ** self._failures.get(key, 0), self.max_delay))

    def __len__(self) -> int:
        return len(self._queued)

    @property
    def pending(self) -> int:
        """Keys queued, in flight, or waiting on a timer."""
        return len(self._queued) + len(self._processing) + len(self._timers)

    async def join(self) -> None:
        """Wait until no key is queued, in flight or scheduled."""
        await self._idle.wait()

    def _check_idle(self) -> None:
        if not self._queued and not self._processing and not self._timers:
            self._idle.set()

    # -- workers ------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            self._processing.add(key)
            try:
                await self._bucket.acquire()
                outcome = await self._run(key)
                await self._settle(key, outcome)
            finally:
                self._processing.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)
                self._check_idle()

    async def _run(self, key: str) -> Outcome:
        self.stats.processed += 1
        start = time.perf_counter()
        try:
            return await self._handler(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.errors += 1
            metrics.CONTROLLER_ERRORS.labels(self.name).inc()
            if isinstance(exc, Unavailable):
                # etcd is unreachable (the store logs that once per change) or
                # this replica lost the lead: a per-key retry, no traceback
                log.debug("%s: reconcile of %s deferred: %s", self.name, key, exc)
            else:
                log.exception("%s: reconcile of %s failed", self.name, key)
            return Transient(reason=repr(exc))
        finally:
            metrics.CONTROLLER_RECONCILE_DURATION.labels(self.name).observe(
                time.perf_counter() - start
            )

    async def _settle(self, key: str, outcome: Outcome) -> None:
        if isinstance(outcome, Done):
            self.stats.succeeded += 1
            self.forget(key)
        elif isinstance(outcome, Transient):
            self.stats.retried += 1
            metrics.CONTROLLER_RETRIES.labels(self.name).inc()
            if outcome.delay is not None:
                self.add_after(key, outcome.delay)
            else:
                delay = self.backoff(key)
                self._failures[key] = self._failures.get(key, 0) + 1
                self.add_after(key, delay)
        elif isinstance(outcome, Permanent):
            self.stats.permanent += 1
            metrics.CONTROLLER_PERMANENT.labels(self.name).inc()
            self.forget(key)
            if self._on_permanent is not None:
                try:
                    await self._on_permanent(key, outcome.reason)
                except Exception:
                    log.exception("%s: on_permanent(%s) failed", self.name, key)

    async def _resync_loop(self) -> None:
        assert self._resync is not None
        while True:
            await asyncio.sleep(self._resync_period)
            try:
                for key in await self._resync():
                    self.add(key)
            except asyncio.CancelledError:
                raise
            except Unavailable as exc:
                log.debug("%s: resync deferred: %s", self.name, exc)
            except Exception:
                log.exception("%s: resync failed", self.name)
