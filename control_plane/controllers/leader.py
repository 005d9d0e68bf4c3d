"""Leader election on an etcd lease: exactly one replica runs the controllers.

``LeaderElector.run(lead)`` loops forever:

1. grant a lease and ``campaign`` (txn: put
   ``leases/{election}`` = identity with the lease iff the key is absent);
2. as a follower, wait for the seat to empty (a watch on the key; also
   re-campaign every ``lease/3`` s in case an event was missed), keeping the
   own lease alive meanwhile;
3. as the leader, run ``lead()`` as a task **fenced** on the term (every
   etcd txn it or its tasks send also compares the seat's
   ``create_revision``: ``control_plane.store.fenced``), and keep the lease
   alive every ``lease/3`` s.  A failed keepalive is retried every
   ``RETRY`` s; the leader steps down when etcd answers that the lease is
   gone (TTL 0), when a fenced txn finds the seat gone or re-created (a
   replica paused past its lease), or when no keepalive has succeeded for
   a whole lease TTL (the lease must have expired by then).  Safety comes
   from the fence, not from these timers: a deposed leader commits nothing
   even before it notices, so the timers can be patient -- an etcd hiccup
   (a raft election, a lost member) shorter than the lease does not cost
   the term, and the controllers keep running through it.

The etcd lease is granted for ``ttl - 1`` seconds (at least 2, etcd's
minimum): etcd checks lease expiry only every 500 ms, so a lease one second
shorter than ``ttl`` is what makes "a dead leader is replaced within ``ttl``"
hold.

A leader that stops cleanly (``aclose``) resigns: it deletes the seat and
revokes the lease, so a follower takes over at once.  A leader that dies
stops renewing; etcd expires its lease within ``ttl`` and deletes the seat;
the followers' watch fires and one of them wins the next campaign.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from control_plane.domain.errors import BmaasError
from control_plane.store import Fence, Store, fenced

log = logging.getLogger(__name__)

DEFAULT_ELECTION = "controllers"
DEFAULT_TTL = 5
#: seconds before a failed keepalive is tried again
RETRY = 0.25

LeadFn = Callable[[], Coroutine[Any, Any, None]]


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class LeaderElector:
    def __init__(
        self,
        store: Store,
        *,
        election: str = DEFAULT_ELECTION,
        identity: str | None = None,
        ttl: int = DEFAULT_TTL,
    ) -> None:
        if ttl < 2:
            raise ValueError("ttl must be at least 2 seconds")
        self.store = store
        self.election = election
        self.identity = identity or default_identity()
        self.ttl = ttl
        #: the etcd lease TTL (see the module docstring)
        self.lease_ttl = max(2, ttl - 1)
        self.is_leader = False
        self.elected = asyncio.Event()
        self.terms = 0
        #: the current term's fence (None while following)
        self.fence: Fence | None = None
        self._lease = 0
        self._task: asyncio.Task[None] | None = None

    def start(self, lead: LeadFn) -> None:
        self._task = asyncio.create_task(self.run(lead), name=f"leader-{self.identity}")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._resign()

    async def _resign(self) -> None:
        was_leader, lease = self.is_leader, self._lease
        self._set_leader(False)
        self._lease = 0
        with contextlib.suppress(BmaasError):
            if was_leader:
                await self.store.elections.resign(self.election, self.identity)
            if lease:
                await self.store.elections.revoke_lease(lease)

    def _set_leader(self, value: bool) -> None:
        self.is_leader = value
        if value:
            self.terms += 1
            self.elected.set()
        else:
            self.elected.clear()

    async def run(self, lead: LeadFn) -> None:
        failing = False
        while True:
            try:
                await self._one_term(lead)
                failing = False
            except BmaasError as exc:
                # once per outage: the store logs etcd's reachability itself
                if not failing:
                    log.warning("%s: election error (%s); retrying", self.identity, exc)
                failing = True
            self._set_leader(False)
            await asyncio.sleep(min(1.0, self.ttl / 5))

    async def _one_term(self, lead: LeadFn) -> None:
        elections = self.store.elections
        if not self._lease or await elections.keepalive(self._lease) <= 0:
            self._lease = await elections.grant_lease(self.lease_ttl)
        last_ok = time.monotonic()
        # follower: campaign until we win
        while True:
            won, rev, term = await elections.campaign(self.election, self.identity, self._lease)
            if won:
                break
            await self._wait_vacancy(rev + 1)
            if await elections.keepalive(self._lease) <= 0:
                self._lease = await elections.grant_lease(self.lease_ttl)
            last_ok = time.monotonic()
        log.info("%s: elected leader of %s (term %d)", self.identity, self.election, term)
        fence = elections.fence(self.election, term)
        self.fence = fence
        self._set_leader(True)
        with fenced(fence):  # the task (and every task it creates) inherits the fence
            task = asyncio.create_task(lead(), name=f"lead-{self.identity}")
        lost = asyncio.create_task(fence.lost.wait(), name=f"fence-{self.identity}")
        try:
            period = self.lease_ttl / 3
            wait = period
            while not task.done():
                await asyncio.wait({task, lost}, timeout=wait, return_when="FIRST_COMPLETED")
                if task.done():
                    break
                if lost.done():
                    log.warning("%s: a write found the seat gone; stepping down", self.identity)
                    return
                if time.monotonic() - last_ok < period * 0.9:
                    wait = period - (time.monotonic() - last_ok)
                    continue
                sent = time.monotonic()
                try:
                    ttl = await asyncio.wait_for(elections.keepalive(self._lease), period)
                except (BmaasError, TimeoutError):
                    ttl = -1
                if ttl > 0:
                    last_ok = sent  # the lease runs from when etcd got the request, at the latest
                    wait = period
                elif ttl == 0 or time.monotonic() - last_ok > self.lease_ttl:
                    log.warning("%s: lost the leader lease; stepping down", self.identity)
                    self._lease = 0 if ttl == 0 else self._lease
                    return
                else:
                    wait = RETRY
        finally:
            self._set_leader(False)
            self.fence = None
            lost.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if task.exception() is not None:
            log.error("%s: leader work crashed: %r", self.identity, task.exception())

    async def _wait_vacancy(self, start_revision: int) -> None:
        """Return when the seat empties, or after ttl/3 (re-campaign anyway)."""

        async def vacancy() -> None:
            async with contextlib.aclosing(
                self.store.elections.watch(self.election, start_revision=start_revision)
            ) as events:
                async for holder in events:
                    if holder is None:
                        return

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(vacancy(), self.lease_ttl / 3)
