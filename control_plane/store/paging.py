"""Lists: pages, whole snapshots, and what changed since a revision.

Lists walk ``[prefix, prefix_end)`` in key order; ``page_token`` is an
opaque base64 of ``{"k": last key returned, "s": scope}`` where scope ties
the token to the (kind, parent, filter) it was issued for.  Filters
(``domain.filtering``) are applied in the store after decoding, reading
batches until the page is full.  A snapshot (``list_all``) reads every
batch at the revision of the first, so it is one consistent view.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import hashlib
import json
from dataclasses import dataclass
from typing import Generic, TypeVar

from control_plane.domain.errors import InvalidArgument
from control_plane.domain.filtering import Filter, parse_filter
from control_plane.domain.validation import validate_page_size
from control_plane.store import etags
from control_plane.store.keys import KeySpace, parent_ids, prefix_range_end
from control_plane.store.kv import KV, EtcdKV
from control_plane.store.records import R, collection_of

T = TypeVar("T")

LIST_BATCH = 500
SNAPSHOT_BATCH = 2000


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str
    #: etcd revision the first batch of the page was read at
    revision: int


class Pages:
    def __init__(self, kv: EtcdKV, keys: KeySpace) -> None:
        self._kv = kv
        self._keys = keys

    async def list(
        self,
        cls: type[R],
        *,
        parent: str = "",
        page_size: int = 0,
        page_token: str = "",
        filter: str | Filter = "",
    ) -> Page[R]:
        coll = collection_of(cls)
        size = validate_page_size(page_size)
        flt = filter if isinstance(filter, Filter) else parse_filter(filter, record_type=cls)
        prefix = self._keys.collection_prefix(coll, parent_ids(coll, parent))
        end = prefix_range_end(prefix)
        scope = hashlib.sha256(b"%s|%s" % (prefix, flt.text.encode())).hexdigest()[:16]
        start = prefix
        if page_token:
            last = decode_token(page_token, scope)
            if not last.startswith(prefix):
                raise InvalidArgument("page_token: not issued for this list")
            start = last + b"\0"
        items: builtins.list[R] = []
        first_rev = 0
        while True:
            kvs, more, rev = await self._kv.range(start, end, limit=max(size, LIST_BATCH))
            first_rev = first_rev or rev
            for kv in kvs:
                obj = etags.decode(cls, kv)
                if flt.matches(obj):
                    items.append(obj)
                    if len(items) == size:
                        is_last = not more and kv is kvs[-1]
                        token = "" if is_last else encode_token(kv.key, scope)
                        return Page(items, token, first_rev)
            if not more or not kvs:
                return Page(items, "", first_rev)
            start = kvs[-1].key + b"\0"

    async def list_all(
        self, cls: type[R], *, parent: str = "", revision: int = 0
    ) -> tuple[builtins.list[R], int]:
        coll = collection_of(cls)
        prefix = self._keys.collection_prefix(coll, parent_ids(coll, parent))
        kvs, rev = await self.snapshot(prefix, revision=revision)
        return [etags.decode(cls, kv) for kv in kvs], rev

    async def changed_since(self, cls: type[R], revision: int) -> tuple[builtins.list[R], int]:
        prefix = self._keys.collection_prefix(collection_of(cls))
        kvs, _, rev = await self._kv.range(
            prefix, prefix_range_end(prefix), min_mod_revision=revision + 1
        )
        return [etags.decode(cls, kv) for kv in kvs], rev

    async def snapshot(
        self, prefix: bytes, *, keys_only: bool = False, revision: int = 0
    ) -> tuple[builtins.list[KV], int]:
        """Every key under *prefix* at ONE revision (*revision*, if not 0)."""
        end = prefix_range_end(prefix)
        out: builtins.list[KV] = []
        start, rev = prefix, revision
        while True:
            kvs, more, header_rev = await self._kv.range(
                start, end, limit=SNAPSHOT_BATCH, revision=rev, keys_only=keys_only
            )
            rev = rev or header_rev
            out.extend(kvs)
            if not more or not kvs:
                return out, rev
            start = kvs[-1].key + b"\0"


def encode_token(key: bytes, scope: str) -> str:
    raw = json.dumps({"k": base64.b64encode(key).decode(), "s": scope}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, scope: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        key = base64.b64decode(data["k"])
        ok = data["s"] == scope
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidArgument("page_token: malformed") from None
    if not ok:
        raise InvalidArgument("page_token: issued for another list or filter")
    return bytes(key)
