"""Recently seen records of one kind, kept fresh by a (shared) watch.

``Store.follow_records(Instance)`` starts one: it follows the kind's prefix
from the current revision (``EtcdKV.watch_shared``, so it rides on a watch
the replica usually has anyway), keeps the newest version of each
record (newer revision wins; deletions drop it; decoded when first asked
for) in an LRU of ``MAX_RECORDS``.
``Store.mutate`` starts from the cached version instead of reading: its
compare-and-swap txn compares the cached etag and, if the record moved, its
failure branch returns the stored version to go again with -- so a cache
that lags the watch costs one failed txn, never a wrong write, and a cache
hit saves the read.  Plain ``get``/``list`` never use it (they must see
other replicas' writes at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic

from control_plane.domain.errors import BmaasError
from control_plane.store import etags
from control_plane.store.kv import KV, EtcdKV
from control_plane.store.records import R

log = logging.getLogger(__name__)

MAX_RECORDS = 65_536
#: pause before a failed watch is followed again (seconds)
RESTART_DELAY = 0.5


class RecordCache(Generic[R]):
    def __init__(self, kv: EtcdKV, cls: type[R], prefix: bytes) -> None:
        self._kv = kv
        self._cls = cls
        self._prefix = prefix
        self._records: OrderedDict[bytes, R | KV] = OrderedDict()
        self._revs: dict[bytes, int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self, start_revision: int, current_revision: Callable[[], Awaitable[int]]) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(start_revision, current_revision),
            name=f"record-cache {self._cls.__name__}",
        )

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def get(self, key: bytes) -> R | None:
        held = self._records.get(key)
        if isinstance(held, KV):
            held = self._records[key] = etags.decode(self._cls, held)
        return held

    def offer(self, key: bytes, record: R | KV, revision: int) -> None:
        """Keep *record* (written or read at *revision*; a watched ``KV`` is
        decoded only if ``get`` asks for it) unless a newer one is held."""
        if self._revs.get(key, 0) >= revision:
            return
        self._revs[key] = revision
        self._records[key] = record
        self._records.move_to_end(key)
        if len(self._records) > MAX_RECORDS:
            old, _ = self._records.popitem(last=False)
            self._revs.pop(old, None)

    async def _run(
        self, start_revision: int, current_revision: Callable[[], Awaitable[int]]
    ) -> None:
        """Follow the prefix; when the watch fails (compaction, a long etcd
        outage) drop everything and follow again from the current revision
        (``mutate`` reads meanwhile; correctness is the txn's)."""
        while True:
            try:
                await self._follow(start_revision)
            except BmaasError as exc:
                log.warning("record cache of %s restarts (%s)", self._cls.__name__, exc)
            self._records.clear()
            self._revs.clear()
            await asyncio.sleep(RESTART_DELAY)
            with contextlib.suppress(BmaasError):
                start_revision = await current_revision() + 1

    async def _follow(self, start_revision: int) -> None:
        async for deleted, kv in self._kv.watch_shared(self._prefix, start_revision=start_revision):
            if deleted:
                self._records.pop(kv.key, None)
                self._revs[kv.key] = kv.mod_revision  # no older version comes back
                continue
            # most watched versions are superseded before anyone asks: keep
            # the raw value and decode on demand
            self.offer(kv.key, kv, kv.mod_revision)
