"""The shape every controller shares: sources of keys, a work queue, a reconcile.

A controller lists its objects once at start (enqueueing those that need
work), then follows watches from the list's revision + 1 and turns every
event into ``queue.add(key)``; the queue's periodic resync calls
``resync_keys()``.  ``reconcile(key)`` re-reads everything it needs by key,
so duplicate, late or coalesced events are all harmless.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

from control_plane.controllers.config import ControllerConfig
from control_plane.controllers.outcome import Outcome
from control_plane.controllers.workqueue import WorkQueue
from control_plane.domain.errors import BmaasError
from control_plane.store import Store

log = logging.getLogger(__name__)


class Controller(abc.ABC):
    name = "controller"

    def __init__(self, store: Store, config: ControllerConfig) -> None:
        self.store = store
        self.config = config
        self.queue = WorkQueue(
            self._reconcile_logged,
            name=self.name,
            workers=config.workers,
            base_delay=config.base_backoff,
            max_delay=config.max_backoff,
            rate=config.rate,
            burst=config.burst,
            resync=self.resync_keys,
            resync_period=config.resync_period,
            on_permanent=self.on_permanent,
        )
        self._tasks: list[asyncio.Task[None]] = []

    @abc.abstractmethod
    async def reconcile(self, key: str) -> Outcome: ...

    @abc.abstractmethod
    async def resync_keys(self) -> Iterable[str]:
        """Keys that need a pass now (used at start and by the periodic resync)."""

    @abc.abstractmethod
    def sources(self, start_revision: int) -> list[Coroutine[Any, Any, None]]:
        """Watch loops that feed ``self.queue`` from *start_revision*."""

    async def on_permanent(self, key: str, reason: str) -> None:
        log.error("%s: giving up on %s: %s", self.name, key, reason)

    async def _reconcile_logged(self, key: str) -> Outcome:
        return await self.reconcile(key)

    async def start(self) -> None:
        rev = await self.store.current_revision()
        for key in await self.resync_keys():
            self.queue.add(key)
        await self.queue.start()
        for i, source in enumerate(self.sources(rev + 1)):
            self._tasks.append(asyncio.create_task(self._guard(source), name=f"{self.name}-{i}"))

    async def _guard(self, source: Coroutine[Any, Any, None]) -> None:
        try:
            await source
        except asyncio.CancelledError:
            raise
        except BmaasError as exc:
            # a watch that cannot resume (compaction): the periodic resync still
            # covers every key, so keep running on it and say so loudly
            log.error("%s: event source stopped (%s); relying on resync", self.name, exc)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.queue.aclose()
