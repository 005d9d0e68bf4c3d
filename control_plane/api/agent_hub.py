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
agents at once.  Each stream has its own ``Subscription`` (bindings and an
``asyncio.Event``; two streams of one host are two subscriptions, so the
one closing first never takes the other's wake-up with it) and waits on it
with a resync timeout, so a missed or compacted event costs at most one resync
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


class Subscription:
    """One ``Connect`` stream's wake-up: its event and what it is bound to.

    A host may have several streams at once (an agent reconnecting to this
    replica while its old stream is still closing): each has its own
    subscription, so closing one never silences another."""

    __slots__ = ("event", "host_id")

    def __init__(self, host_id: str) -> None:
        self.host_id = host_id
        self.event = asyncio.Event()


class AgentHub:
    def __init__(self, store: Store) -> None:
        self._store = store
        #: host -> the subscriptions of its open streams on this replica
        self._subs: dict[str, set[Subscription]] = {}
        #: record name -> subscriptions whose desired state depends on it
        self._bound: dict[str, set[Subscription]] = {}
        #: subscription -> the names it is bound to (the inverse of ``_bound``)
        self._names: dict[Subscription, frozenset[str]] = {}
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

    def subscribe(self, host_id: str) -> Subscription:
        """A new stream of *host_id*: its subscription, already woken (the
        first desired state is computed at once)."""
        sub = Subscription(host_id)
        self._subs.setdefault(host_id, set()).add(sub)
        sub.event.set()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """The stream of *sub* closed: forget it, and only it."""
        subs = self._subs.get(sub.host_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.host_id]
        self._set(sub, frozenset())

    def streams(self, host_id: str) -> int:
        """How many streams of *host_id* this replica serves."""
        return len(self._subs.get(host_id, ()))

    def bind(self, sub: Subscription, name: str) -> None:
        """Also wake *sub*'s stream when the record *name* changes."""
        if name:
            self._set(sub, self._names.get(sub, frozenset()) | {name})

    def mark(self) -> int:
        """The number of the last change seen: take it before computing."""
        return self._seq

    def rebind(self, sub: Subscription, names: Iterable[str], *, since: int | None = None) -> None:
        """*sub*'s stream now serves exactly *names* (its instance, the
        instance's volumes): wake it when one of them, or one of the records
        noted for them (``note_dependencies``), changes.  Replaces the
        stream's previous bindings.  With *since* (``mark()`` taken before
        the computation), a newly bound record that changed after it wakes
        the stream at once."""
        served = {n for n in names if n}
        bound = set(served)
        for name in served:
            bound |= self._noted.pop(name, frozenset())
        new = bound - self._names.get(sub, frozenset())
        self._set(sub, frozenset(bound))
        if since is not None and new and self._changed_after(new, since):
            sub.event.set()

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

    def _set(self, sub: Subscription, names: frozenset[str]) -> None:
        old = self._names.pop(sub, frozenset())
        for name in old - names:
            subs = self._bound.get(name)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._bound[name]
        for name in names - old:
            self._bound.setdefault(name, set()).add(sub)
        if names:
            self._names[sub] = names

    def _wake_host(self, host_id: str) -> None:
        for sub in self._subs.get(host_id, ()):
            sub.event.set()

    def _wake_bound(self, name: str) -> None:
        self._changed(name)
        for sub in self._bound.get(name, ()):
            sub.event.set()

    def _resync_all(self) -> None:
        for subs in self._subs.values():
            for sub in subs:
                sub.event.set()

    async def _follow(self, kind: type[Host] | type[Instance] | type[Volume], start: int) -> None:
        while True:
            try:
                async for name, revision in self._store.watch_names(kind, start_revision=start):
                    start = revision + 1
                    if name.startswith("hosts/"):
                        self._wake_host(name.removeprefix("hosts/"))
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
