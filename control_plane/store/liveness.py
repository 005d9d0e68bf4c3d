"""Host liveness: one etcd lease per replica, not per host.

A host *h* is alive while the key ``heartbeats/{h}`` exists.  The replica
that holds *h*'s agent stream keeps it so:

1. the first heartbeat of *h* puts ``heartbeats/{h}`` bound to the
   replica's ONE lease (granted on the first heartbeat the replica sees,
   with that heartbeat's TTL) - one txn, and the only write of a session;
2. every later heartbeat only moves *h*'s local deadline (now + TTL): no
   etcd round trip at all;
3. one long-lived LeaseKeepAlive stream (``EtcdKV.keep_alive``) refreshes
   the replica's lease every TTL/3 - the whole fleet of the replica costs
   one keepalive per TTL/3 seconds, whatever its size;
4. a sweeper deletes the key of each host whose deadline passed (a silent
   agent, or a stream that closed without the agent coming back here),
   guarded by "still bound to my lease" so that it never deletes a key
   another replica took over;
5. a watch of ``heartbeats/`` drops a host from the held set when its key
   is deleted (``expire``, the sweeper of a race) or re-put by another
   replica (the agent moved): its next heartbeat here puts the key again;
6. when the replica dies, its lease expires within the TTL and etcd deletes
   every key bound to it at once: exactly the hosts whose agents did not
   reconnect elsewhere (a reconnect re-puts the key under the new
   replica's lease, which detaches it from the dead one);
7. if the lease itself expired (etcd unreachable for longer than the TTL),
   a new one is granted and every host with a live deadline is put again.

Consumers see the same keys as ever: a PUT with ``version == 1`` is a
session starting, a DELETE a session ending (``watch``), the set of keys
the live hosts (``live_hosts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from control_plane.domain.errors import BmaasError
from control_plane.store.errors import LeaseExpired
from control_plane.store.keys import KeySpace, prefix_range_end
from control_plane.store.kv import EtcdKV, cmp_lease, op_delete, op_put

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_TTL = 10
#: hosts put again per txn after the replica's lease was lost (etcd's max-txn-ops is 128)
REPUT_BATCH = 100
#: pause before a broken keepalive stream or watch is opened again (seconds)
RETRY_DELAY = 0.5


@dataclass(frozen=True, slots=True)
class HeartbeatEvent:
    host: str
    #: True: heartbeats (re)started; False: the session ended
    alive: bool
    revision: int


class Liveness:
    def __init__(
        self,
        kv: EtcdKV,
        keys: KeySpace,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kv = kv
        self._keys = keys
        self._clock = clock
        self._monotonic = monotonic
        #: host -> monotonic deadline of its last heartbeat
        self._deadlines: dict[str, float] = {}
        #: host -> revision at which this replica put its key under ``_lease``
        self._held: dict[str, int] = {}
        self._lease = 0
        self._ttl = DEFAULT_HEARTBEAT_TTL
        self._granting = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def lease(self) -> int:
        """This replica's liveness lease (0 before the first heartbeat)."""
        return self._lease

    def held(self) -> int:
        """How many hosts this replica keeps alive now."""
        return len(self._held)

    async def heartbeat(self, host: str, *, ttl: int = DEFAULT_HEARTBEAT_TTL) -> None:
        """Record that *host*'s agent is alive for the next *ttl* seconds."""
        self._deadlines[host] = self._monotonic() + ttl
        if host in self._held:
            return
        for _ in range(2):
            lease = await self._lease_for(ttl)
            op = op_put(self._keys.heartbeat(host), self._value(host, ttl), lease=lease)
            try:
                res = await self._kv.txn([], [op])
            except LeaseExpired:
                # expired before the keepalive noticed (a stalled replica):
                # grant another now, the keepalive follows the new one
                async with self._granting:
                    if self._lease == lease:
                        await self._regrant()
                continue
            if lease == self._lease:
                self._held[host] = res.revision
            return

    async def expire(self, host: str) -> None:
        """Delete *host*'s key now (tests, or an operator fencing a host);
        its next heartbeat starts a new session."""
        self._deadlines.pop(host, None)
        self._held.pop(host, None)
        await self._kv.delete(self._keys.heartbeat(host))

    def forget(self, host: str) -> None:
        """Stop keeping *host* alive: its key goes when its TTL runs out."""
        if host in self._deadlines:
            self._deadlines[host] = min(self._deadlines[host], self._monotonic() + self._ttl)

    async def is_alive(self, host: str) -> bool:
        return await self._kv.get(self._keys.heartbeat(host)) is not None

    async def live_hosts(self) -> tuple[set[str], int]:
        """Ids of hosts whose heartbeat key exists, and the read revision."""
        prefix = self._keys.heartbeats_prefix()
        kvs, _, rev = await self._kv.range(prefix, prefix_range_end(prefix), keys_only=True)
        return {self._keys.last_segment(kv.key) for kv in kvs}, rev

    async def watch(self, *, start_revision: int) -> AsyncGenerator[HeartbeatEvent, None]:
        """Heartbeat sessions starting (PUT, version 1) and ending (DELETE)."""
        prefix = self._keys.heartbeats_prefix()
        async for deleted, kv in self._kv.watch_shared(prefix, start_revision=start_revision):
            if deleted or kv.version == 1:
                host = self._keys.last_segment(kv.key)
                yield HeartbeatEvent(host, not deleted, kv.mod_revision)

    async def aclose(self) -> None:
        """Stop the keepalive, sweeper and watch.  The lease is NOT revoked:
        a replica restart is not an agent failure until the TTL passes."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._held.clear()
        self._deadlines.clear()
        self._lease = 0

    # -- the replica's lease -----------------------------------------------------------

    def _value(self, host: str, ttl: int) -> bytes:
        return json.dumps({"host": host, "since": self._clock(), "ttl": ttl}).encode()

    async def _lease_for(self, ttl: int) -> int:
        if self._lease:
            return self._lease
        async with self._granting:
            if not self._lease:
                self._ttl = ttl
                self._lease = await self._kv.lease_grant(ttl)
                rev = await self._current_revision()
                loop = asyncio.get_running_loop()
                self._tasks = [
                    loop.create_task(self._keep(), name="liveness-keepalive"),
                    loop.create_task(self._sweep(), name="liveness-sweep"),
                    loop.create_task(self._follow(rev + 1), name="liveness-watch"),
                ]
        return self._lease

    async def _current_revision(self) -> int:
        prefix = self._keys.heartbeats_prefix()
        _, _, rev = await self._kv.range(prefix, prefix_range_end(prefix), limit=1, keys_only=True)
        return rev

    async def _keep(self) -> None:
        """Refresh the lease on one stream; grant a new one when it expired."""
        while True:
            lease = self._lease
            try:
                async for ttl in self._kv.keep_alive(lease, every=self._ttl / 3):
                    if ttl <= 0 or self._lease != lease:
                        break
                else:
                    continue
                async with self._granting:
                    if self._lease == lease:  # not already replaced by a heartbeat
                        await self._regrant()
            except BmaasError as exc:
                log.warning("liveness keepalive restarts (%s)", exc)
                await asyncio.sleep(RETRY_DELAY)

    async def _regrant(self) -> None:
        """The lease expired (and etcd deleted our keys): a new lease, and
        every host that still heartbeats put again under it."""
        log.warning("liveness lease %x expired; granting another", self._lease)
        self._held.clear()
        self._lease = await self._kv.lease_grant(self._ttl)
        now = self._monotonic()
        live = [h for h, deadline in self._deadlines.items() if deadline > now]
        for i in range(0, len(live), REPUT_BATCH):
            batch = live[i : i + REPUT_BATCH]
            ops = [
                op_put(self._keys.heartbeat(h), self._value(h, self._ttl), lease=self._lease)
                for h in batch
            ]
            res = await self._kv.txn([], ops)
            self._held.update(dict.fromkeys(batch, res.revision))

    async def _sweep(self) -> None:
        """Delete the keys of hosts whose last heartbeat is older than the TTL."""
        period = min(1.0, self._ttl / 4)
        while True:
            await asyncio.sleep(period)
            now = self._monotonic()
            for host in [h for h, deadline in self._deadlines.items() if deadline <= now]:
                if self._deadlines.get(host, now + 1) > now:
                    continue  # heartbeated meanwhile
                del self._deadlines[host]
                if self._held.pop(host, None) is None:
                    continue  # another replica holds it, or it is gone already
                key = self._keys.heartbeat(host)
                try:
                    await self._kv.txn([cmp_lease(key, self._lease)], [op_delete(key)])
                except BmaasError as exc:
                    # the lease then expires on its own if etcd stays away
                    log.warning("liveness: cannot end %s's session (%s)", host, exc)

    async def _follow(self, start_revision: int) -> None:
        """Forget a held host whose key was deleted or taken by another lease."""
        prefix = self._keys.heartbeats_prefix()
        while True:
            try:
                async for deleted, kv in self._kv.watch_shared(
                    prefix, start_revision=start_revision
                ):
                    host = self._keys.last_segment(kv.key)
                    put_at = self._held.get(host)
                    if put_at is None or kv.mod_revision <= put_at:
                        continue
                    if deleted or kv.lease != self._lease:
                        del self._held[host]
            except BmaasError as exc:
                log.warning("liveness watch restarts (%s)", exc)
            # events may be lost: every host puts its key again on its next heartbeat
            self._held.clear()
            await asyncio.sleep(RETRY_DELAY)
            with contextlib.suppress(BmaasError):
                start_revision = await self._current_revision() + 1
