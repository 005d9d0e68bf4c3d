"""One etcd watch per prefix, fanned out to every local watcher of it.

A replica has several followers of the same prefix (the scheduler's host
cache, the host controller and the agent hub all follow ``hosts/``; two
controllers follow ``agent_reports/``...).  Separate etcd watches make etcd
send, and this process receive and parse, every event once per follower.
``WatchHub.watch(prefix, start_revision)`` instead shares ONE
``EtcdKV.watch_resuming`` stream per prefix:

- the stream's reader task puts each ``(deleted, kv)`` into every
  subscriber's queue (unbounded, like the etcd client's own buffering) and
  keeps the last ``HISTORY`` events;
- a subscriber that asks for ``start_revision`` joins the shared stream if
  every event at or after that revision is still in the history or yet to
  come (``covered_from <= start_revision``): it gets the history's events
  from its revision on, then the live ones, skipping any older than its
  revision -- exactly what a watch of its own from that revision would
  deliver.  Otherwise (it asks for older history) it gets a private watch;
- an error of the shared stream (``RevisionCompacted``) reaches every
  subscriber, and the next subscriber starts a fresh stream; the stream
  stops when its last subscriber leaves.

Subscribers must not mutate the shared ``KV`` objects (they are frozen).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Generic, Protocol, TypeVar

#: events kept per prefix for subscribers that join a running stream
HISTORY = 4096


class Revisioned(Protocol):
    @property
    def mod_revision(self) -> int: ...


K = TypeVar("K", bound=Revisioned)
#: ``(deleted, kv)``
_Item = tuple[bool, K]
#: the source of events: ``(prefix, start_revision) -> (deleted, kv), ...``
#: (``EtcdKV.watch_resuming``)
Source = Callable[[bytes, int], AsyncIterator[tuple[bool, K]]]


class _Stream(Generic[K]):
    def __init__(self, source: Source[K], prefix: bytes, start_revision: int) -> None:
        self.prefix = prefix
        self.subscribers: set[asyncio.Queue[_Item[K] | BaseException]] = set()
        self.history: deque[_Item[K]] = deque(maxlen=HISTORY)
        #: every event at or after this revision is in ``history`` or still to come
        self.covered_from = start_revision
        self.failed = False
        self.task = asyncio.get_running_loop().create_task(
            self._run(source, start_revision), name=f"watch {prefix!r}"
        )

    async def _run(self, source: Source[K], start_revision: int) -> None:
        try:
            async for item in source(self.prefix, start_revision):
                if len(self.history) == HISTORY:
                    self.covered_from = self.history[0][1].mod_revision + 1
                self.history.append(item)
                for queue in self.subscribers:
                    queue.put_nowait(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to every subscriber, which re-raises it
            self.failed = True
            for queue in self.subscribers:
                queue.put_nowait(exc)


class WatchHub(Generic[K]):
    def __init__(self, source: Source[K]) -> None:
        self._source = source
        self._streams: dict[bytes, _Stream[K]] = {}

    async def watch(self, prefix: bytes, *, start_revision: int) -> AsyncGenerator[_Item[K], None]:
        """``(deleted, kv)`` of every change under *prefix* from
        *start_revision* (inclusive), forever (see the module docstring)."""
        stream = self._streams.get(prefix)
        if stream is None or stream.failed:
            stream = self._streams[prefix] = _Stream(self._source, prefix, start_revision)
        elif start_revision < stream.covered_from:
            async for item in self._source(prefix, start_revision):
                yield item
            return
        queue: asyncio.Queue[_Item[K] | BaseException] = asyncio.Queue()
        for item in stream.history:  # no await between the replay and joining
            if item[1].mod_revision >= start_revision:
                queue.put_nowait(item)
        stream.subscribers.add(queue)
        try:
            while True:
                got = await queue.get()
                if isinstance(got, BaseException):
                    raise got
                if got[1].mod_revision >= start_revision:
                    yield got
        finally:
            stream.subscribers.discard(queue)
            if not stream.subscribers:
                if self._streams.get(prefix) is stream:
                    del self._streams[prefix]
                stream.task.cancel()

    async def aclose(self) -> None:
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            stream.task.cancel()
        for stream in streams:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await stream.task
