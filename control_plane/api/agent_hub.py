"""Wakes the agent streams whose desired state may have changed.

One hub per replica follows four kinds: ``hosts/``, ``instances/`` and
``volumes/`` with ``Store.watch_names`` (names only, values not decoded),
and ``networkInterfaces/`` with ``Store.watch`` (decoded once per event:
the hub needs an interface's subnet to know its VPC).  Streams tell the hub
which records their desired state was computed from (``rebind``):

- the records they serve: the host's instance and its volumes;
- the records the instance's VXLAN peers were computed from, which the
  desired-state code notes per instance (``note_dependencies``): its VPCs
  (by name), every interface of those VPCs, the instances attached to them
  and those instances' hosts.

A change of a bound record wakes every stream bound to it; a host key change
also wakes that host's own stream; an interface change also wakes the
streams bound to the interface's VPC (so an interface created and attached
after the last computation still reaches the peers).  So an attach, a
detach, a resize, a new peer in a VPC or a peer going away reaches the
agents at once.  Each stream waits on its own ``asyncio.Event`` with a
resync timeout, so a missed or compacted event costs at most one resync
period, never correctness (level-triggered: the stream recomputes the whole
desired state from etcd after every wake-up).  A change that lands while a
stream computes, to a record it did not watch yet, is not lost either: the
hub numbers the changes it sees (``mark``) and remembers the last
``RECENT_CHANGES`` names, so ``rebind(..., since=mark)`` wakes the stream
again when a newly bound record changed after its computation began.

Cost: four watches per replica regardless of the number of agents, instead
of one poll per agent per second; an event costs a dict lookup per bound
name.  A VPC's interface change wakes every stream of that VPC on the
replica (each then recomputes its peers: see ``AgentServicer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from control_plane.domain.compute import Instance
from control_plane.domain.errors import BmaasError
from control_plane.domain.host import Host
from control_plane.domain.network import NetworkInterface
from control_plane.domain.volume import Volume
from control_plane.store import Store

log = logging.getLogger(__name__)

#: names whose last change the hub remembers (for ``rebind(since=...)``)
RECENT_CHANGES = 4096


class AgentHub:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._events: dict[str, asyncio.Event] = {}
        #: record name -> hosts whose stream depends on it
        self._bound: dict[str, set[str]] = {}
        #: host -> the names it is bound to (the inverse of ``_bound``)
        self._names: dict[str, frozenset[str]] = {}
        #: instance -> names its last desired state was also computed from,
        #: until a stream binds the instance (``rebind`` consumes them)
        self._noted: dict[str, frozenset[str]] = {}
        #: changes seen so far; name -> number of its last change (oldest first)
        self._seq = 0
        self._recent: dict[str, int] = {}
        #: the newest change number dropped from ``_recent``
        self._forgotten = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        rev = await self._store.current_revision()
        for kind in (Host, Instance, Volume):
            self._tasks.append(
                asyncio.create_task(self._follow(kind, rev + 1), name=f"agent-hub-{kind.__name__}")
            )
        self._tasks.append(
            asyncio.create_task(self._follow_nics(rev + 1), name="agent-hub-NetworkInterface")
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
        self._set(host_id, frozenset())

    def bind(self, host_id: str, name: str) -> None:
        """Also wake *host_id*'s stream when the record *name* changes."""
        if name:
            self._set(host_id, self._names.get(host_id, frozenset()) | {name})

    def mark(self) -> int:
        """The number of the last change seen: take it before computing."""
        return self._seq

    def rebind(self, host_id: str, names: Iterable[str], *, since: int | None = None) -> None:
        """*host_id*'s stream now serves exactly *names* (its instance, the
        instance's volumes): wake it when one of them, or one of the records
        noted for them (``note_dependencies``), changes.  Replaces the
        host's previous bindings.  With *since* (``mark()`` taken before the
        computation), a newly bound record that changed after it wakes the
        stream at once."""
        served = {n for n in names if n}
        bound = set(served)
        for name in served:
            bound |= self._noted.pop(name, frozenset())
        new = bound - self._names.get(host_id, frozenset())
        self._set(host_id, frozenset(bound))
        if since is not None and new and self._changed_after(new, since):
            self._wake(host_id)

    def _changed_after(self, names: set[str], since: int) -> bool:
        if self._forgotten > since:
            return True  # too much happened meanwhile to tell: assume so
        return any(self._recent.get(name, 0) > since for name in names)

    def _changed(self, name: str) -> None:
        self._seq += 1
        self._recent.pop(name, None)
        self._recent[name] = self._seq
        if len(self._recent) > RECENT_CHANGES:
            oldest = next(iter(self._recent))
            self._forgotten = self._recent.pop(oldest)

    def note_dependencies(self, instance: str, names: Iterable[str]) -> None:
        """The desired state just computed for *instance* was also read
        from *names*; the next ``rebind`` of *instance* binds them too."""
        self._noted[instance] = frozenset(names)

    def _set(self, host_id: str, names: frozenset[str]) -> None:
        old = self._names.pop(host_id, frozenset())
        for name in old - names:
            hosts = self._bound.get(name)
            if hosts is not None:
                hosts.discard(host_id)
                if not hosts:
                    del self._bound[name]
        for name in names - old:
            self._bound.setdefault(name, set()).add(host_id)
        if names:
            self._names[host_id] = names

    def _wake(self, host_id: str) -> None:
        event = self._events.get(host_id)
        if event is not None:
            event.set()

    def _wake_bound(self, name: str) -> None:
        self._changed(name)
        for host_id in self._bound.get(name, ()):
            self._wake(host_id)

    def _resync_all(self) -> None:
        for event in self._events.values():
            event.set()

    async def _follow(self, kind: type[Host] | type[Instance] | type[Volume], start: int) -> None:
        while True:
            try:
                async for name, revision in self._store.watch_names(kind, start_revision=start):
                    start = revision + 1
                    if name.startswith("hosts/"):
                        self._wake(name.removeprefix("hosts/"))
                    self._wake_bound(name)
            except BmaasError as exc:  # compaction or a long outage: resync everyone
                log.warning("agent hub watch on %s failed (%s); resyncing", kind.__name__, exc)
                self._resync_all()
                start = await self._store.current_revision() + 1
                await asyncio.sleep(0.5)

    async def _follow_nics(self, start: int) -> None:
        while True:
            try:
                async for ev in self._store.watch(NetworkInterface, start_revision=start):
                    start = ev.revision + 1
                    self._wake_bound(ev.name)
                    if ev.obj is not None:
                        self._wake_bound(ev.obj.vpc_name)
            except BmaasError as exc:
                log.warning("agent hub watch on NetworkInterface failed (%s); resyncing", exc)
                self._resync_all()
                start = await self._store.current_revision() + 1
                await asyncio.sleep(0.5)
