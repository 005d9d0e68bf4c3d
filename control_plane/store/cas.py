"""Records and compare-and-swap: reads, updates, read-modify-write, deletes.

Every write is ONE etcd transaction, so a crash never leaves half a change
(``k_i`` = each record's key, ``u``/``r``/``t`` = the tenant's charged and
released counters and record, ``c`` = each claim, ``n`` = the name)::

    update   if mod(k_i)=etag_i for every record [and mod(t), mod(u)=seen: growth]
                [and mod(r)=seen: release]
             then put k_i... [put u+growth] [put r+release]
             else get k_i..., get u, r, t            -> Aborted / NotFound / retry
    delete   if mod(k)=seen [and value(c)=n ...] [and mod(r)=seen]
             then delete k [delete q] [delete c ...] [put r+usage]
             else get k [, get c ...]     -> a claim not held by n: left alone, retry

Retries happen only when a *usage counter* moved (another write of the
same tenant won); a moved record always surfaces as ``Aborted``
(``RecordChanged``/``RecordGone`` naming it).  ``update_many(previous=...)``
takes the records as the caller read them, so a usage-moving update (a
termination) needs no read either.  ``mutate`` of a kind followed with
``follow`` starts from the watched copy (``record_cache``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from control_plane.domain.errors import Aborted, BmaasError, NotFound, QuotaExceeded
from control_plane.domain.names import parse_name
from control_plane.domain.tenant import QuotaUsage
from control_plane.store import codec, etags
from control_plane.store.errors import RecordChanged, RecordGone
from control_plane.store.keys import KeySpace
from control_plane.store.kv import EtcdKV
from control_plane.store.paging import Pages
from control_plane.store.quota import USAGE_RETRIES, QuotaLedger, StateReads, backoff
from control_plane.store.record_cache import RecordCache
from control_plane.store.records import (
    ZERO,
    R,
    claims_of,
    collection_of,
    is_accounted,
    needs_previous,
    stamp,
    usage_of,
)
from control_plane.store.txn import Txn


def _tenant_of(obj: object) -> str:
    return parse_name(getattr(obj, "name", "")).tenant or ""


class Records:
    def __init__(
        self,
        kv: EtcdKV,
        keys: KeySpace,
        ledger: QuotaLedger,
        pages: Pages,
        clock: Callable[[], float],
    ) -> None:
        self._kv = kv
        self._keys = keys
        self._ledger = ledger
        self._pages = pages
        self._clock = clock
        self._caches: dict[type, RecordCache[Any]] = {}

    async def aclose(self) -> None:
        for cache in self._caches.values():
            await cache.aclose()

    # -- reads --------------------------------------------------------------------------

    async def get_at(self, cls: type[R], name: str, *, revision: int = 0) -> tuple[R, int]:
        key = self._keys.of_name(name, collection=collection_of(cls))
        kvs, _, header = await self._kv.range(key, revision=revision)
        if not kvs:
            raise NotFound(f"{name} not found")
        return etags.decode(cls, kvs[0]), revision or header

    async def get_many(
        self, cls: type[R], names: Sequence[str], *, revision: int = 0
    ) -> list[R | None]:
        if not names:
            return []
        coll = collection_of(cls)
        got, _ = await self._kv.get_many(
            [self._keys.of_name(n, collection=coll) for n in names], revision=revision
        )
        return [None if kv is None else etags.decode(cls, kv) for kv in got]

    async def get_snapshot(
        self, wanted: Sequence[tuple[type[Any], str]], *, revision: int = 0
    ) -> tuple[list[Any], int]:
        """Records of any kinds, ``(cls, name)`` each, read at one revision
        in one round trip (None for each absent one); and that revision."""
        keys = [self._keys.of_name(n, collection=collection_of(c)) for c, n in wanted]
        got, header = await self._kv.get_many(keys, revision=revision)
        out = [
            None if kv is None else etags.decode(cls, kv)
            for (cls, _), kv in zip(wanted, got, strict=True)
        ]
        return out, revision or header

    async def addresses_in_use(self, subnet: str) -> set[str]:
        prefix = self._keys.addresses_prefix(subnet)
        kvs, _ = await self._pages.snapshot(prefix, keys_only=True)
        return {self._keys.last_segment(kv.key) for kv in kvs}

    def cached(self, cls: type[R], name: str) -> R | None:
        """The followed copy of *name*, if the cache of its kind holds one."""
        cache = self._caches.get(cls)
        if cache is None:
            return None
        found: R | None = cache.get(self._keys.of_name(name, collection=collection_of(cls)))
        return found

    async def follow(self, cls: type[R], start_revision: int) -> None:
        if cls in self._caches:
            return
        cache = RecordCache(self._kv, cls, self._keys.collection_prefix(collection_of(cls)))
        self._caches[cls] = cache

        async def current() -> int:
            _, _, rev = await self._kv.range(self._keys.root.encode(), keys_only=True)
            return rev

        cache.start(start_revision, current)

    # -- update -------------------------------------------------------------------------

    async def update_many(self, objs: Sequence[R], *, previous: Iterable[object] = ()) -> list[R]:
        now = self._clock()
        keys: list[bytes] = []
        revs: list[int] = []
        stamped: list[R] = []
        for obj in objs:
            rn = parse_name(obj.name, collection=collection_of(type(obj)))
            keys.append(self._keys.resource(rn))
            revs.append(etags.revision_of(obj.etag, obj.name))
            stamped.append(stamp(obj, now=now, created=False))
        accounted = [i for i, o in enumerate(stamped) if is_accounted(o) and needs_previous(o)]
        values = [codec.encode(o) for o in stamped]
        tenants = sorted({_tenant_of(stamped[i]) for i in accounted})
        known: dict[int, object] = {}
        if accounted:
            by_name = {getattr(p, "name", None): p for p in previous}
            for i in accounted:
                prev = by_name.get(stamped[i].name)
                if prev is not None and getattr(prev, "etag", "") == objs[i].etag:
                    known[i] = prev
        with self._ledger.writing(tenants):
            fresh = False  # usage state read (or returned by a failed txn) just now
            for _ in range(USAGE_RETRIES):
                txn = Txn()
                reads = []
                for key, rev, value in zip(keys, revs, values, strict=True):
                    txn.require_mod(key, rev)
                    txn.put(key, value)
                    reads.append(txn.read_on_failure(key))
                state = {t: StateReads(txn, self._keys, t) for t in tenants}
                written: list[tuple[str, bytes, bytes]] = []
                if accounted:
                    if len(known) < len(accounted) or any(
                        self._ledger.seen(t) is None for t in tenants
                    ):
                        await self._read_usage_state(stamped, keys, revs, accounted, known)
                        fresh = True
                    deltas: dict[str, QuotaUsage] = {}
                    for i in accounted:
                        delta = usage_of(stamped[i]) - usage_of(known[i])
                        if not delta.is_zero:
                            tenant = _tenant_of(stamped[i])
                            deltas[tenant] = deltas.get(tenant, ZERO) + delta
                    seen = {t: s for t in deltas if (s := self._ledger.seen(t)) is not None}
                    try:
                        written = self._ledger.apply(txn, deltas, seen)
                    except (QuotaExceeded, NotFound):
                        if fresh:
                            raise
                        for t in tenants:  # judged on remembered values: confirm with a read
                            self._ledger.forget(t)
                        continue
                started = time.perf_counter()
                out = await txn.commit(self._kv)
                if out.succeeded:
                    self._ledger.wrote(written, out.revision)
                    return [etags.with_etag(o, str(out.revision)) for o in stamped]
                for obj, rev, read in zip(stamped, revs, reads, strict=True):
                    got = out.get(read)
                    if got is None:
                        raise RecordGone(obj.name)
                    if got.mod_revision != rev:
                        raise RecordChanged(obj.name, rev, got.mod_revision)
                # only a usage counter (or a tenant) moved: go again with the
                # fresh values the failure branch brought
                for i in accounted:
                    got = out.get(reads[i])
                    assert got is not None
                    known[i] = codec.decode(type(stamped[i]), got.value)
                for tenant, st in state.items():
                    self._ledger.learn(tenant, st.seen(out))
                fresh = True
                # another write of the tenant won: let this replica's others go first
                await self._ledger.spread(tenants, time.perf_counter() - started)
            raise Aborted("too much contention on tenant usage; retry")

    async def _read_usage_state(
        self,
        objs: Sequence[object],
        keys: Sequence[bytes],
        revs: Sequence[int],
        accounted: Sequence[int],
        known: dict[int, object],
    ) -> None:
        """Read the stored versions of the accounted records, their tenants
        and usage counters in one round trip (into *known* / the ledger)."""
        tenants = sorted({_tenant_of(objs[i]) for i in accounted})
        got = await self._ledger.read(tenants, extra=[keys[i] for i in accounted])
        for j, i in enumerate(accounted):
            name = getattr(objs[i], "name", "?")
            kv = got[j]
            if kv is None:
                raise RecordGone(name)
            if kv.mod_revision != revs[i]:
                raise RecordChanged(name, revs[i], kv.mod_revision)
            known[i] = codec.decode(type(objs[i]), kv.value)

    async def mutate(
        self,
        cls: type[R],
        name: str,
        change: Callable[[R], R],
        *,
        etag: str = "",
        attempts: int = 16,
    ) -> R:
        coll = collection_of(cls)
        key = self._keys.of_name(name, collection=coll)
        cache = self._caches.get(cls)
        current: R | None = cache.get(key) if cache is not None else None
        cached = current is not None
        if current is None and cache is not None:
            # not cached (the watch lags, or the record is new): a
            # serializable read -- no consensus round in etcd; it may be as
            # stale as a cached copy, so it is treated like one
            kvs, _, _ = await self._kv.range(key, serializable=True)
            if kvs:
                current, cached = etags.decode(cls, kvs[0]), True
        if current is None:
            current, _ = await self.get_at(cls, name)
        for attempt in range(attempts):
            try:
                if etag and current.etag != etag:
                    raise Aborted(f"{name}: etag {etag} is stale (now {current.etag})")
                new = change(current)
            except BmaasError:
                if not cached:
                    raise
                (current, _), cached = await self.get_at(cls, name), False
                continue
            if new == current:
                if not cached:
                    return current
                (current, _), cached = await self.get_at(cls, name), False
                continue
            if is_accounted(new) and needs_previous(new):
                try:
                    (out,) = await self.update_many([new], previous=[current])
                    return out
                except Aborted:
                    if etag and not cached:
                        raise
                    (current, _), cached = await self.get_at(cls, name), False
                    continue
            stamped = stamp(new, now=self._clock(), created=False)
            txn = Txn()
            txn.require_mod(key, etags.revision_of(new.etag, name))
            txn.put(key, codec.encode(stamped))
            stored = txn.read_on_failure(key)
            res = await txn.commit(self._kv)
            if res.succeeded:
                written = etags.with_etag(stamped, str(res.revision))
                if cache is not None:
                    cache.offer(key, written, res.revision)
                return written
            got = res.get(stored)
            if got is None:
                raise NotFound(f"{name} not found")
            if etag and not cached:
                raise Aborted(f"{name} was modified concurrently")
            current, cached = etags.decode(cls, got), False
            if attempt:
                await backoff(attempt)  # several writers keep racing on this record
        raise Aborted(f"{name}: too much contention; retry")

    # -- delete -------------------------------------------------------------------------

    async def delete(self, cls: type[R], name: str, *, etag: str = "") -> None:
        rn = parse_name(name, collection=collection_of(cls))
        key = self._keys.resource(rn)
        #: claim keys found NOT held by this record (one stored before its
        #: kind had claims): a failed txn names them, the next one skips them
        foreign: set[bytes] = set()
        for _ in range(USAGE_RETRIES):
            kv = await self._kv.get(key)
            if kv is None:
                raise NotFound(f"{name} not found")
            if etag and str(kv.mod_revision) != etag:
                raise Aborted(f"{name}: etag {etag} is stale (now {kv.mod_revision})")
            current = codec.decode(cls, kv.value)
            txn = Txn()
            txn.require_mod(key, kv.mod_revision)
            txn.delete(key)
            request_id = getattr(current, "request_id", "")
            if request_id and rn.tenant:
                txn.delete(self._keys.request(rn.tenant, request_id))
            ckeys = [self._keys.claim(c) for c in claims_of(current)]
            for ckey in ckeys:
                if ckey not in foreign:
                    txn.require_value(ckey, name.encode())
                    txn.delete(ckey)
            used = usage_of(current)
            if not used.is_zero and rn.tenant:
                await self._ledger.release(txn, {rn.tenant: ZERO - used})
            if rn.collection == "tenants":
                txn.delete(self._keys.usage(rn.ids[0]))
                txn.delete(self._keys.released(rn.ids[0]))
            stored = txn.read_on_failure(key) if ckeys else None
            held = [(ckey, txn.read_on_failure(ckey)) for ckey in ckeys]
            out = await txn.commit(self._kv)
            if out.succeeded:
                return
            if stored is not None:
                lost = set()
                for ckey, read in held:
                    got = out.get(read)
                    if ckey not in foreign and (got is None or got.value != name.encode()):
                        lost.add(ckey)
                now = out.get(stored)
                if lost and now is not None and now.mod_revision == kv.mod_revision:
                    # the record is as read: only claims it does not hold failed
                    # the compare -- delete it without them
                    foreign |= lost
                    continue
            if etag:
                raise Aborted(f"{name} was modified concurrently")
        raise Aborted(f"{name}: too much contention; retry")
