"""In-memory host cache fed by a watch: the scheduler reads here, writes by CAS.

``start()`` lists every host at one revision (``Store.list_all``), lists the
live heartbeat keys, then follows both prefixes with watches from that
revision + 1.  A record is applied only if its revision (etag) is newer than
the one held, so the scheduler's own optimistic updates (applied right after
a successful bind, at the txn revision) and watch events can arrive in any
order.  On a lost CAS the scheduler calls ``mark_stale(host, revision)``:
the host leaves the pools until an event at that revision or later arrives.
A stale cache therefore only ever costs a retry, never a double allocation
(the etcd transaction compares the host's ``mod_revision``).

Index: ``pools[host_class][zone][rack] -> {host_id: Host}`` holds the hosts
that pass the static filters (AVAILABLE, not cordoned, not in maintenance,
healthy); ``rack_stats`` counts, per rack, all hosts and the free ones, for
pack-by-rack scoring.  Every update is O(1).  ``revision`` is the etcd
revision the cache has caught up with; ``wait_for_revision`` lets a
scheduler that lost a race wait for the change that beat it.

``catch_up()`` is the revision barrier of a "no capacity" answer: one
linearizable read of the hosts changed since ``revision`` (and of the live
heartbeats) applies everything etcd held when it was called that the
watches have not delivered yet -- a host freed by another replica a moment
ago is placeable at once instead of after the watch's delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence

from control_plane.domain.errors import BmaasError
from control_plane.domain.host import Host
from control_plane.scheduler.filters import passes_static
from control_plane.scheduler.request import PlacementRequest
from control_plane.scheduler.scoring import RackStats
from control_plane.store import RevisionCompacted, Store

log = logging.getLogger(__name__)

_Pools = dict[str, dict[str, dict[str, dict[str, Host]]]]


class HostCache:
    def __init__(self, store: Store, *, track_liveness: bool = True) -> None:
        self._store = store
        self._track_liveness = track_liveness
        self._hosts: dict[str, Host] = {}
        self._revs: dict[str, int] = {}
        self._pools: _Pools = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
        self._rack_total: dict[str, int] = defaultdict(int)
        self._rack_free: dict[str, int] = defaultdict(int)
        self._pooled: dict[str, tuple[str, str, str]] = {}
        self._stats: dict[str, RackStats] = {}
        #: bumped whenever a rack enters or leaves a pool (invalidates ``_names``)
        self._rack_epoch = 0
        self._names: dict[tuple[str, str], tuple[int, tuple[str, ...]]] = {}
        self.live: set[str] | None = set() if track_liveness else None
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = asyncio.Event()
        #: the etcd revision the cache has caught up with (list, then watch events)
        self.revision = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        rev = await self._load()
        self._tasks.append(asyncio.create_task(self._follow_hosts(rev + 1), name="host-cache"))
        if self._track_liveness:
            self._tasks.append(
                asyncio.create_task(self._follow_liveness(rev + 1), name="host-cache-live")
            )
        self.ready.set()

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def __aenter__(self) -> HostCache:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _load(self) -> int:
        hosts, rev = await self._store.list_all(Host)
        if self.live is not None:
            live, _ = await self._store.liveness.live_hosts()
            self.live = live
        for host in hosts:
            self.apply(host)
        self._advance(rev)
        return rev

    def _advance(self, revision: int) -> None:
        if revision <= self.revision:
            return
        self.revision = revision
        while self._waiters and self._waiters[0][0] <= revision:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)

    async def wait_for_revision(self, revision: int, *, within: float) -> bool:
        """Wait (at most *within* seconds) until the cache has applied every
        host change up to *revision*; True if it has."""
        if self.revision >= revision:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._waiters, (revision, self._seq, fut))
        try:
            await asyncio.wait_for(fut, within)
        except TimeoutError:
            return False
        return True

    async def catch_up(self) -> int:
        """Apply the host changes and new heartbeats etcd holds now (the
        watches deliver the same later: applying is idempotent); the
        revision caught up with.  Deletions are left to the watch (they
        only ever remove capacity)."""
        hosts, rev = await self._store.changed_since(Host, self.revision)
        for host in hosts:
            self.apply(host)
        if self.live is not None:
            live, _ = await self._store.liveness.live_hosts()
            for host_id in live - self.live:
                self.set_live(host_id, True)
        return rev

    async def _follow_hosts(self, start: int) -> None:
        while True:
            try:
                async with contextlib.aclosing(
                    self._store.watch(Host, start_revision=start)
                ) as events:
                    async for ev in events:
                        if ev.obj is not None:
                            self.apply(ev.obj)
                        else:
                            self.remove(ev.name.rsplit("/", 1)[-1], ev.revision)
                        self._advance(ev.revision)
            except RevisionCompacted:
                log.warning("host watch compacted; relisting")
                start = await self._relist()
            except BmaasError as exc:
                log.warning("host watch failed (%s); relisting", exc)
                await asyncio.sleep(0.5)
                start = await self._relist()

    async def _relist(self) -> int:
        while True:
            try:
                return await self._load() + 1
            except BmaasError as exc:
                log.warning("host relist failed (%s)", exc)
                await asyncio.sleep(1.0)

    async def _follow_liveness(self, start: int) -> None:
        while True:
            try:
                async with contextlib.aclosing(
                    self._store.liveness.watch(start_revision=start)
                ) as events:
                    async for ev in events:
                        self.set_live(ev.host, ev.alive)
            except BmaasError as exc:
                log.warning("liveness watch failed (%s); relisting", exc)
                await asyncio.sleep(0.5)
                live, rev = await self._store.liveness.live_hosts()
                self.live = live
                for host_id in list(self._hosts):
                    self._reindex(host_id)
                start = rev + 1

    # -- updates (all O(1)) ---------------------------------------------------------------

    def apply(self, host: Host) -> bool:
        """Take *host* if it is newer than what the cache holds."""
        rev = int(host.etag or 0)
        if rev <= self._revs.get(host.id, 0):
            return False
        self._revs[host.id] = rev
        old = self._hosts.get(host.id)
        if old is None or old.rack != host.rack:
            if old is not None:
                self._rack_total[old.rack] -= 1
                self._restat(old.rack)
            self._rack_total[host.rack] += 1
        self._hosts[host.id] = host
        self._reindex(host.id)
        return True

    def remove(self, host_id: str, revision: int) -> None:
        if revision <= self._revs.get(host_id, 0):
            return
        self._revs[host_id] = revision
        old = self._hosts.pop(host_id, None)
        self._unpool(host_id)
        if old is not None:
            self._rack_total[old.rack] -= 1
            self._restat(old.rack)

    def mark_stale(self, host_id: str, revision: int) -> None:
        """The store holds *host_id* at *revision*: drop it from the pools
        until the watch delivers that revision.  If the watch already has
        (it can beat the failed transaction's reply), the cache is current
        and nothing changes: unpooling it then would hide the host until
        its next change, which may never come."""
        if revision > 0 and self._revs.get(host_id, 0) >= revision:
            return
        self._unpool(host_id)
        if revision > 0:
            self._revs[host_id] = min(self._revs.get(host_id, 0), revision - 1)

    def set_live(self, host_id: str, alive: bool) -> None:
        if self.live is None:
            return
        if alive:
            self.live.add(host_id)
        else:
            self.live.discard(host_id)
        self._reindex(host_id)

    def _reindex(self, host_id: str) -> None:
        self._unpool(host_id)
        host = self._hosts.get(host_id)
        if host is not None and passes_static(host, self.live):
            racks = self._pools[host.host_class][host.zone]
            if host.rack not in racks:
                self._rack_epoch += 1
            racks[host.rack][host.id] = host
            self._pooled[host.id] = (host.host_class, host.zone, host.rack)
            self._rack_free[host.rack] += 1
        if host is not None:
            self._restat(host.rack)

    def _unpool(self, host_id: str) -> None:
        where = self._pooled.pop(host_id, None)
        if where is not None:
            cls, zone, rack = where
            racks = self._pools[cls][zone]
            racks[rack].pop(host_id, None)
            if not racks[rack]:
                del racks[rack]
                self._rack_epoch += 1
            self._rack_free[rack] -= 1
            self._restat(rack)

    def _restat(self, rack: str) -> None:
        self._stats[rack] = RackStats(total=self._rack_total[rack], free=self._rack_free[rack])

    # -- reads --------------------------------------------------------------------------------

    def get(self, host_id: str) -> Host | None:
        return self._hosts.get(host_id)

    def hosts(self) -> Collection[Host]:
        """Every host held (a live view: iterate it on the event loop)."""
        return self._hosts.values()

    def __len__(self) -> int:
        return len(self._hosts)

    def free_count(self) -> int:
        return len(self._pooled)

    def pools(self, req: PlacementRequest) -> Mapping[str, Collection[Host]]:
        """rack -> hosts that pass the static filters and match *req*'s class,
        zone and spread constraint (a live view: nothing is copied, and a
        rack's hosts are only gathered when asked for -- the scorer looks
        at one or two racks of hundreds)."""
        zones = self._pools.get(req.host_class, {})
        parts = [racks for zone, racks in zones.items() if not req.zone or zone == req.zone]
        held = self._names.get((req.host_class, req.zone))
        if held is None or held[0] != self._rack_epoch:
            # rack names in a stable order (zone by zone, first seen first);
            # recomputed only when a rack enters or leaves a pool
            names = tuple(dict.fromkeys(itertools.chain.from_iterable(parts)))
            held = self._names[(req.host_class, req.zone)] = (self._rack_epoch, names)
        return _RackPools(parts, held[1], req.excluded_racks)

    def rack_stats(self) -> Mapping[str, RackStats]:
        """rack -> (hosts, free hosts); maintained incrementally, not copied."""
        return self._stats

    def count_class(self, host_class: str) -> int:
        return sum(1 for h in self._hosts.values() if h.host_class == host_class)


class _RackPools(Mapping[str, Collection[Host]]):
    """rack -> hosts over the pools of one or more zones (a rack name may
    appear in several zones: its hosts are chained, not copied)."""

    __slots__ = ("_excluded", "_names", "_parts")

    def __init__(
        self,
        parts: Sequence[dict[str, dict[str, Host]]],
        names: Sequence[str],
        excluded: frozenset[str],
    ) -> None:
        self._parts = parts
        self._excluded = excluded
        self._names = names if not excluded else [r for r in names if r not in excluded]

    def __getitem__(self, rack: str) -> Collection[Host]:
        if rack in self._excluded:
            raise KeyError(rack)
        found: list[Collection[Host]] = [
            racks[rack].values() for racks in self._parts if rack in racks
        ]
        if not found:
            raise KeyError(rack)
        return found[0] if len(found) == 1 else _Joined(found)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class _Joined(Collection[Host]):
    """The hosts of one rack name found in several zones: a view over the
    pools' own views."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[Collection[Host]]) -> None:
        self.parts = parts

    def __iter__(self) -> Iterator[Host]:
        for part in self.parts:
            yield from part

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    def __contains__(self, item: object) -> bool:
        return any(item in part for part in self.parts)
