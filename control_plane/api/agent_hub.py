"""Wakes the agent streams whose desired state may have changed.

One hub per replica follows three kinds with ``Store.watch_names``
(names only matter, values are not decoded): ``hosts/``, ``instances/`` and
``volumes/``.  A host key change wakes the stream of that host; an instance
or volume key change wakes the stream of the host the instance (or the
instance the volume is attached to) was last seen on (the streams tell the
hub which records they are serving, ``bind``), so an attach, a detach or a
resize reaches the agent at once.  Each stream waits on its
own ``asyncio.Event`` with a resync timeout, so a missed or compacted event
costs at most one resync period, never correctness (level-triggered: the
stream recomputes the whole desired state from etcd after every wake-up).

Cost: three watches per replica regardless of the number of agents, instead of
one poll per agent per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from control_plane.domain.compute import Instance
from control_plane.domain.errors import BmaasError
from control_plane.domain.host import Host
from control_plane.domain.volume import Volume
from control_plane.store import Store

log = logging.getLogger(__name__)


class AgentHub:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._events: dict[str, asyncio.Event] = {}
        self._instance_host: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        rev = await self._store.current_revision()
        for kind in (Host, Instance, Volume):
            self._tasks.append(
                asyncio.create_task(self._follow(kind, rev + 1), name=f"agent-hub-{kind.__name__}")
            )

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def subscribe(self, host_id: str) -> asyncio.Event:
        event = self._events.setdefault(host_id, asyncio.Event())
        event.set()  # compute the first desired state at once
        return event

    def unsubscribe(self, host_id: str) -> None:
        self._events.pop(host_id, None)
        for inst in [i for i, h in self._instance_host.items() if h == host_id]:
            del self._instance_host[inst]

    def bind(self, host_id: str, instance: str) -> None:
        """*host_id*'s stream currently serves *instance* (or a volume attached to
        it): wake the stream when that record changes."""
        if instance:
            self._instance_host[instance] = host_id

    def _wake(self, host_id: str | None) -> None:
        if host_id is not None:
            event = self._events.get(host_id)
            if event is not None:
                event.set()

    async def _follow(self, kind: type[Host] | type[Instance] | type[Volume], start: int) -> None:
        while True:
            try:
                async for name, revision in self._store.watch_names(kind, start_revision=start):
                    start = revision + 1
                    if name.startswith("hosts/"):
                        self._wake(name.removeprefix("hosts/"))
                    else:
                        self._wake(self._instance_host.get(name))
            except BmaasError as exc:  # compaction or a long outage: resync everyone
                log.warning("agent hub watch on %s failed (%s); resyncing", kind.__name__, exc)
                for event in self._events.values():
                    event.set()
                start = await self._store.current_revision() + 1
                await asyncio.sleep(0.5)
