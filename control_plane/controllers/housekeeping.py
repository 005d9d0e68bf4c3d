"""etcd housekeeping, run by the controllers' leader: compaction and NOSPACE recovery.

etcd keeps every revision of every key until it is told to forget them;
without compaction its database only grows, reaches its space quota and
raises the NOSPACE alarm, after which it refuses every write.  Every
``interval`` seconds the leader:

1. notes the current revision (a quorum read) with the time it saw it;
2. compacts history up to the newest revision it noted at least
   ``retention`` seconds ago, so a watch that fell behind by less than
   ``retention`` can still resume from where it was (older ones get
   ``RevisionCompacted`` and relist, which every watcher here handles);
3. when etcd has raised NOSPACE, compacts up to the current revision and
   defragments (``members`` calls: the channel spreads them over the
   members); if the database is then below 90% of etcd's space quota
   (``quota_bytes``, which must match etcd's ``--quota-backend-bytes``) it
   disarms the alarm and the region writes again.  If not, the data itself
   fills the quota: the alarm stays, health stays NOT_SERVING, and the
   operator has to free space or raise the quota (docs/operations.md); the
   next pass tries again;
4. deletes the records of tenant tokens that were revoked or expired more
   than ``TOKEN_RECORD_KEEP`` (30 days) ago (``TenantTokens.purge``): they
   authenticate nothing, and ``ListTenantTokens`` shows a month of history.

Only the leader runs it (one compaction per region, not one per replica).
A deposed leader that compacts once more does no harm: compaction is
idempotent and never removes a current key.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable

from control_plane import metrics
from control_plane.domain.errors import BmaasError
from control_plane.store import Store

log = logging.getLogger(__name__)

#: how long the record of a revoked or expired tenant token is kept
TOKEN_RECORD_KEEP = 30 * 24 * 3600.0


class Housekeeper:
    def __init__(
        self,
        store: Store,
        *,
        interval: float = 300.0,
        retention: float = 600.0,
        members: int = 1,
        quota_bytes: int = 2 << 30,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.interval = interval
        self.retention = retention
        self.members = members
        self.quota_bytes = quota_bytes
        self.clock = clock
        self.wall_clock = wall_clock
        #: (time seen, revision) of each pass, oldest first
        self._seen: collections.deque[tuple[float, int]] = collections.deque()
        self.compacted = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="etcd-housekeeping")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except BmaasError as exc:
                log.warning("etcd housekeeping: %s", exc)
            await asyncio.sleep(self.interval)

    def _due(self, now: float) -> int:
        """The newest revision seen at least ``retention`` ago (0: none)."""
        due = 0
        while self._seen and now - self._seen[0][0] >= self.retention:
            due = self._seen.popleft()[1]
        return due

    async def run_once(self) -> None:
        kv = self.store.kv
        if "NOSPACE" in await kv.alarms():
            await self.recover_space()
            return
        now = self.clock()
        revision = await self._revision()
        self._seen.append((now, revision))
        due = self._due(now)
        if due > self.compacted:
            await kv.compact(due)
            self.compacted = due
            metrics.ETCD_COMPACTED_REVISION.set(due)
            log.info("etcd history compacted up to revision %d", due)
        ended_before = self.wall_clock() - TOKEN_RECORD_KEEP
        purged = await self.store.tenant_tokens.purge(ended_before=ended_before)
        if purged:
            log.info("deleted %d tenant-token records ended over 30 days ago", purged)

    async def _revision(self) -> int:
        _, _, revision = await self.store.kv.range(
            self.store.keys.root.encode(), keys_only=True, limit=1
        )
        return revision

    async def recover_space(self) -> None:
        kv = self.store.kv
        revision = await self._revision()
        log.warning("etcd NOSPACE: compacting to %d and defragmenting", revision)
        await kv.compact(revision)
        self.compacted = revision
        self._seen.clear()
        for _ in range(max(1, self.members)):
            await kv.defragment()
        size = await kv.db_size()
        if size >= 0.9 * self.quota_bytes:
            log.error(
                "etcd still full after compaction and defragmentation (%d of %d bytes): "
                "free space or raise --quota-backend-bytes",
                size,
                self.quota_bytes,
            )
            return
        await kv.disarm("NOSPACE")
        metrics.ETCD_SPACE_RECOVERIES.inc()
        log.warning("etcd NOSPACE alarm disarmed after compaction and defragmentation")
