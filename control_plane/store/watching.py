"""Watches as typed events.

``Watches.watch`` turns etcd watch events into ``WatchEvent``s: every
local watcher of a prefix shares one etcd watch (``watch_hub``) and each
event is decoded once (a small memo keyed by kind, key and revision; the
records are frozen, so sharing them is safe).  When etcd is briefly
unreachable the watch resumes from the last delivered revision (skipping
keys it already delivered at that revision).  ``RevisionCompacted``
propagates: relist with ``list_all`` and watch from its revision + 1.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from control_plane.store import etags
from control_plane.store.keys import KeySpace, parent_ids
from control_plane.store.kv import KV, EtcdKV
from control_plane.store.records import R, collection_of

T = TypeVar("T")

#: decoded watch events kept so that local watchers of one prefix decode each once
WATCH_MEMO = 1024


@dataclass(frozen=True, slots=True)
class WatchEvent(Generic[T]):
    """A change under a watched prefix.  ``obj`` is None for deletions."""

    deleted: bool
    name: str
    obj: T | None
    revision: int


class Watches:
    def __init__(self, kv: EtcdKV, keys: KeySpace) -> None:
        self._kv = kv
        self._keys = keys
        self._memo: dict[tuple[type, bytes, int], Any] = {}

    async def watch(
        self, cls: type[R], *, start_revision: int, parent: str = ""
    ) -> AsyncGenerator[WatchEvent[R], None]:
        coll = collection_of(cls)
        prefix = self._keys.collection_prefix(coll, parent_ids(coll, parent))
        memo = self._memo
        async for deleted, kv in self._kv.watch_shared(prefix, start_revision=start_revision):
            name = self._keys.name_of_key(kv.key)
            obj = None
            if not deleted:
                mkey = (cls, kv.key, kv.mod_revision)
                obj = memo.get(mkey)
                if obj is None:
                    if len(memo) >= WATCH_MEMO:
                        memo.clear()
                    obj = memo[mkey] = etags.decode(cls, kv)
            yield WatchEvent(deleted, name, obj, kv.mod_revision)

    async def watch_names(
        self, cls: type[R], *, start_revision: int
    ) -> AsyncGenerator[tuple[str, int], None]:
        prefix = self._keys.collection_prefix(collection_of(cls))
        async for _deleted, kv in self._kv.watch_shared(prefix, start_revision=start_revision):
            yield self._keys.name_of_key(kv.key), kv.mod_revision

    def watch_raw(
        self, prefix: bytes, *, start_revision: int
    ) -> AsyncGenerator[tuple[bool, KV], None]:
        return self._kv.watch_shared(prefix, start_revision=start_revision)
