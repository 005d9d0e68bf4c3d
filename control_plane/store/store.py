"""``Store``: typed records in etcd with compare-and-swap, quotas and idempotency.

Every write is ONE etcd transaction, so a crash never leaves half a change.
The shapes (``k`` = the record's key, ``u`` = ``usage/{t}``, ``q`` =
``requests/{t}/{id}``, ``t`` = ``tenants/{t}``)::

    create   if version(k)=0 [and version(q)=0] [and mod(u)=seen and mod(t)=seen]
             [or, no quota: version(t)>0]
             then put k [put q] [put u+delta]
             else get k, get q, get u, get t         -> decide, retry with what came back
    update   if mod(k_i)=etag_i for every record [and mod(u)=seen]
             then put k_i... [put u+delta]
             else get k_i...                         -> Aborted / NotFound / retry on u
    delete   if mod(k)=seen [and mod(u)=seen] then delete k [delete q] [put u-delta]

The etag of a record is its key's ``mod_revision`` as a decimal string; the
revision of a successful txn becomes the etag of everything it wrote.
Retries happen only when the *usage counter* moved (another create of the
same tenant won); a moved record always surfaces as ``Aborted``.

"seen" usage is what this replica last read or wrote: writes that move a
tenant's counter are queued on a per-tenant lock, and a create remembers
the counter it wrote, so the next create of that tenant goes straight to
the txn.  A stale memory only costs one failed txn (whose failure branch
returns the fresh tenant and counter); a quota refusal is only ever given
on freshly read values.

Lists walk ``[prefix, prefix_end)`` in key order; ``page_token`` is an
opaque base64 of ``{"k": last key returned, "s": scope}`` where scope ties
the token to the (kind, parent, filter) it was issued for.  Filters
(``domain.filtering``) are applied in the store after decoding, reading
batches until the page is full.

``watch`` turns etcd watch events into ``WatchEvent``s and, when etcd is
briefly unreachable, resumes from the last delivered revision (skipping keys
it already delivered at that revision).  ``RevisionCompacted`` propagates:
relist with ``list_all`` and watch from its revision + 1.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import builtins
import contextlib
import dataclasses
import hashlib
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

from control_plane.domain.errors import (
    Aborted,
    AlreadyExists,
    InvalidArgument,
    NotFound,
    QuotaExceeded,
)
from control_plane.domain.filtering import parse_filter
from control_plane.domain.names import parse_name
from control_plane.domain.tenant import QuotaUsage, Tenant
from control_plane.domain.validation import validate_page_size, validate_request_id
from control_plane.store import codec
from control_plane.store.errors import RecordChanged, RecordGone
from control_plane.store.keys import DEFAULT_ROOT, KeySpace, parent_ids, prefix_range_end
from control_plane.store.kv import (
    KV,
    EtcdKV,
    Stats,
    cmp_absent,
    cmp_mod,
    cmp_present,
    op_delete,
    op_get,
    op_put,
)
from control_plane.store.records import (
    ZERO,
    R,
    collection_of,
    is_accounted,
    is_accounted_kind,
    needs_previous,
    stamp,
    usage_of,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
#: (compares, request ops) to splice into a transaction
_TxnParts = tuple[list[Any], list[Any]]

#: How many times a write is retried when only the tenant's usage counter moved.
USAGE_RETRIES = 200
LIST_BATCH = 500
SNAPSHOT_BATCH = 2000


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str
    #: etcd revision the first batch of the page was read at
    revision: int


@dataclass(frozen=True, slots=True)
class WatchEvent(Generic[T]):
    """A change under a watched prefix.  ``obj`` is None for deletions."""

    deleted: bool
    name: str
    obj: T | None
    revision: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _CreatePlan(Generic[T]):
    obj: T
    key: bytes
    value: bytes
    tenant: str
    delta: QuotaUsage
    req_key: bytes | None
    req_value: bytes
    state_keys: list[bytes]

    @property
    def charges(self) -> bool:
        return bool(self.tenant) and not self.delta.is_zero


def etag_of(kv: KV) -> str:
    return str(kv.mod_revision)


def _revision(etag: str, name: str) -> int:
    try:
        rev = int(etag)
    except ValueError:
        raise InvalidArgument(f"etag of {name}: {etag!r} is not a store etag") from None
    if rev <= 0:
        raise InvalidArgument(f"etag of {name}: {etag!r} is not a store etag")
    return rev


class Store:
    """Async access to every record of the control plane (see the package docstring)."""

    def __init__(
        self,
        kv: EtcdKV,
        *,
        root: str = DEFAULT_ROOT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kv = kv
        self.keys = KeySpace(root)
        self.clock = clock
        # imported here to keep one concern per module and avoid an import cycle
        from control_plane.store.agent_reports import AgentReports
        from control_plane.store.election import Elections
        from control_plane.store.liveness import Liveness

        self.liveness = Liveness(kv, self.keys, clock=clock)
        self.elections = Elections(kv, self.keys)
        self.reports = AgentReports(self)
        self._usage_locks: dict[str, asyncio.Lock] = {}
        self._usage_seen: dict[str, tuple[KV | None, KV | None]] = {}

    @classmethod
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = 2379,
        *,
        root: str = DEFAULT_ROOT,
        rpc_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> Store:
        kv = await EtcdKV.connect(host, port, rpc_timeout=rpc_timeout)
        return cls(kv, root=root, clock=clock)

    async def aclose(self) -> None:
        await self.liveness.aclose()
        await self.kv.aclose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def stats(self) -> Stats:
        return self.kv.stats

    async def current_revision(self) -> int:
        """etcd's current revision (the header of a one-key read)."""
        _, _, rev = await self.kv.range(self.keys.root.encode(), keys_only=True)
        return rev

    # -- usage serialization --------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _usage_lock(self, tenants: Iterable[str]) -> AsyncIterator[None]:
        """Serialize this replica's writes to the usage counters of *tenants*.

        Correctness never depends on it (the txn compares the counter's
        revision); it turns N local writers racing on one counter -- each
        round one winner and N-1 wasted round-trips, and possible starvation
        -- into a queue.  Only other replicas can still make a usage txn retry.
        """
        locks = [self._usage_locks.setdefault(t, asyncio.Lock()) for t in sorted(set(tenants))]
        async with contextlib.AsyncExitStack() as stack:
            for lock in locks:
                await stack.enter_async_context(lock)
            yield

    @staticmethod
    def _tenants_of(objs: Iterable[object]) -> builtins.list[str]:
        return [parse_name(getattr(o, "name", "")).tenant or "" for o in objs]

    # -- reads --------------------------------------------------------------------------------

    async def get(self, cls: type[R], name: str) -> R:
        """The record *name* of type *cls*; ``NotFound`` if absent."""
        key = self.keys.of_name(name, collection=collection_of(cls))
        kv = await self.kv.get(key)
        if kv is None:
            raise NotFound(f"{name} not found")
        return codec.decode(cls, kv.value, etag=etag_of(kv))

    async def get_usage(self, tenant: str) -> QuotaUsage:
        kv = await self.kv.get(self.keys.usage(tenant))
        return codec.decode(QuotaUsage, kv.value) if kv else ZERO

    async def list(
        self,
        cls: type[R],
        *,
        parent: str = "",
        page_size: int = 0,
        page_token: str = "",
        filter: str = "",
    ) -> Page[R]:
        """One page of *cls* records below *parent*, in key order, matching *filter*."""
        coll = collection_of(cls)
        size = validate_page_size(page_size)
        flt = parse_filter(filter, record_type=cls)
        prefix = self.keys.collection_prefix(coll, parent_ids(coll, parent))
        end = prefix_range_end(prefix)
        scope = hashlib.sha256(b"%s|%s" % (prefix, filter.encode())).hexdigest()[:16]
        start = prefix
        if page_token:
            last = _decode_token(page_token, scope)
            if not last.startswith(prefix):
                raise InvalidArgument("page_token: not issued for this list")
            start = last + b"\0"
        items: builtins.list[R] = []
        first_rev = 0
        while True:
            kvs, more, rev = await self.kv.range(start, end, limit=max(size, LIST_BATCH))
            first_rev = first_rev or rev
            for kv in kvs:
                obj = codec.decode(cls, kv.value, etag=etag_of(kv))
                if flt.matches(obj):
                    items.append(obj)
                    if len(items) == size:
                        is_last = not more and kv is kvs[-1]
                        token = "" if is_last else _encode_token(kv.key, scope)
                        return Page(items, token, first_rev)
            if not more or not kvs:
                return Page(items, "", first_rev)
            start = kvs[-1].key + b"\0"

    async def list_all(self, cls: type[R], *, parent: str = "") -> tuple[builtins.list[R], int]:
        """Every *cls* record below *parent* read at ONE revision, and that
        revision (watch from ``revision + 1`` to follow changes)."""
        coll = collection_of(cls)
        prefix = self.keys.collection_prefix(coll, parent_ids(coll, parent))
        kvs = await self._snapshot(prefix)
        items = [codec.decode(cls, kv.value, etag=etag_of(kv)) for kv in kvs[0]]
        return items, kvs[1]

    async def _snapshot(self, prefix: bytes) -> tuple[builtins.list[KV], int]:
        end = prefix_range_end(prefix)
        out: builtins.list[KV] = []
        start, rev = prefix, 0
        while True:
            kvs, more, header_rev = await self.kv.range(
                start, end, limit=SNAPSHOT_BATCH, revision=rev
            )
            rev = rev or header_rev
            out.extend(kvs)
            if not more or not kvs:
                return out, rev
            start = kvs[-1].key + b"\0"

    # -- create -------------------------------------------------------------------------------

    async def create(self, obj: R, *, request_id: str = "", fingerprint: str = "") -> R:
        """Store a new record; ``AlreadyExists`` if its name is taken.

        With *request_id* (tenant-scoped records only) the create is
        idempotent: a retry with the same id returns the record the first
        call created (``InvalidArgument`` if *fingerprint* is given and
        differs from the first call's).  Records that count against a
        quota (instances, volumes) take their usage in the same transaction
        (``QuotaExceeded`` when it would not fit).  Tenant-scoped records
        require their tenant to exist (``NotFound``).
        """
        plan = self._plan_create(obj, request_id, fingerprint)
        async with self._usage_lock([plan.tenant] if plan.charges else []):
            # Tenant and usage records as last seen: this replica's previous
            # create of the tenant (valid while it holds the tenant's usage
            # lock, unless another replica moved them: then the txn fails and
            # its failure branch brings the fresh ones), else read now.
            seen = self._usage_seen.get(plan.tenant) if plan.charges else None
            fresh = False
            for attempt in range(USAGE_RETRIES):
                if plan.charges and seen is None:
                    got, _ = await self.kv.get_many(plan.state_keys)
                    if plan.req_key and got[3] is not None:
                        # a retry of a create that already happened: replay it,
                        # even if the tenant is at its quota by now
                        return await self._replay(type(plan.obj), got[3], fingerprint)
                    seen, fresh = (got[1], got[2]), True
                try:
                    compare, success, new_usage = self._create_ops(plan, seen)
                except QuotaExceeded:
                    if fresh:
                        raise
                    seen = None  # judged on cached usage: confirm with a fresh read
                    continue
                res = await self.kv.txn(compare, success, [op_get(k) for k in plan.state_keys])
                if res.succeeded:
                    if seen is not None and new_usage is not None:
                        usage_kv = KV(plan.state_keys[2], new_usage, res.revision, 0, 0, 0)
                        self._usage_seen[plan.tenant] = (seen[0], usage_kv)
                    return _with_etag(plan.obj, str(res.revision))
                record, tenant_kvs, usage_kvs, request = res.ranges
                if plan.req_key and request:
                    return await self._replay(type(plan.obj), request[0], fingerprint)
                if record:
                    raise AlreadyExists(f"{plan.obj.name} already exists")
                if plan.tenant and not tenant_kvs:
                    self._usage_seen.pop(plan.tenant, None)
                    raise NotFound(f"tenants/{plan.tenant} not found")
                seen = (tenant_kvs[0] if tenant_kvs else None, usage_kvs[0] if usage_kvs else None)
                fresh = True
                if plan.charges:
                    self._usage_seen[plan.tenant] = seen
                    if attempt:
                        await _backoff(attempt)  # another replica keeps moving the counter
        raise Aborted(f"{plan.obj.name}: too much contention on tenant usage; retry")

    def _plan_create(self, obj: R, request_id: str, fingerprint: str) -> _CreatePlan[R]:
        rn = parse_name(obj.name, collection=collection_of(type(obj)))
        tenant = rn.tenant if rn.collection != "tenants" else None
        if request_id:
            validate_request_id(request_id)
            if tenant is None:
                raise InvalidArgument("request_id is only supported on tenant resources")
        obj = stamp(obj, now=self.clock(), created=True)
        if request_id and getattr(obj, "request_id", None) == "":
            # remembered on the record so that deleting it frees the request id
            obj = dataclasses.replace(obj, request_id=request_id)  # type: ignore[type-var]
        key = self.keys.resource(rn)
        req_key = self.keys.request(tenant, request_id) if tenant and request_id else None
        return _CreatePlan(
            obj=obj,
            key=key,
            value=codec.encode(obj),
            tenant=tenant or "",
            delta=usage_of(obj),
            req_key=req_key,
            req_value=json.dumps({"name": obj.name, "fingerprint": fingerprint}).encode(),
            # read together: [record, tenant, usage, request] (absent keys read as the record)
            state_keys=[
                key,
                self.keys.tenant(tenant) if tenant else key,
                self.keys.usage(tenant) if tenant else key,
                req_key or key,
            ],
        )

    def _create_ops(
        self, plan: _CreatePlan[R], seen: tuple[KV | None, KV | None] | None
    ) -> tuple[builtins.list[Any], builtins.list[Any], bytes | None]:
        """Compares and ops of the create txn, and the usage value it writes."""
        key, tenant_key, usage_key, _ = plan.state_keys
        compare = [cmp_absent(key)]
        success = [op_put(key, plan.value)]
        if plan.req_key is not None:
            compare.append(cmp_absent(plan.req_key))
            success.append(op_put(plan.req_key, plan.req_value))
        if plan.tenant and not plan.charges:
            compare.append(cmp_present(tenant_key))
        elif plan.charges:
            assert seen is not None
            tenant_kv, usage_kv = seen
            if tenant_kv is None:
                raise NotFound(f"tenants/{plan.tenant} not found")
            quota = codec.decode(Tenant, tenant_kv.value).quota
            used = codec.decode(QuotaUsage, usage_kv.value) if usage_kv else ZERO
            new_usage = used + plan.delta
            if not new_usage.fits(quota):
                raise QuotaExceeded(
                    f"tenants/{plan.tenant}: quota exceeded (using {used.instances} instances"
                    f" / {used.volume_gib} GiB of {quota.max_instances} / "
                    f"{quota.max_volume_gib} GiB; the request needs {plan.delta.instances} / "
                    f"{plan.delta.volume_gib} GiB)"
                )
            compare.append(cmp_mod(tenant_key, tenant_kv.mod_revision))
            compare.append(cmp_mod(usage_key, usage_kv.mod_revision if usage_kv else 0))
            usage_value = codec.encode(new_usage)
            success.append(op_put(usage_key, usage_value))
            return compare, success, usage_value
        return compare, success, None

    async def _replay(self, cls: type[R], record: KV, fingerprint: str) -> R:
        data = json.loads(record.value)
        if fingerprint and data.get("fingerprint") and data["fingerprint"] != fingerprint:
            raise InvalidArgument("request_id was already used for a different request")
        return await self.get(cls, data["name"])

    # -- update -------------------------------------------------------------------------------

    async def update(self, obj: R) -> R:
        """Compare-and-swap *obj* on its ``etag``; ``Aborted`` if the stored
        record moved since it was read, ``NotFound`` if it is gone."""
        (out,) = await self.update_many([obj])
        return out

    async def update_many(self, objs: Sequence[R]) -> builtins.list[R]:
        """Write several records in ONE transaction, each compared on its own
        etag: all are written or none (e.g. bind an instance to a host).

        Usage deltas (an instance reaching TERMINATED, a volume resize) are
        applied to the tenants' usage counters in the same transaction.
        """
        now = self.clock()
        keys: builtins.list[bytes] = []
        revs: builtins.list[int] = []
        stamped: builtins.list[R] = []
        for obj in objs:
            rn = parse_name(obj.name, collection=collection_of(type(obj)))
            keys.append(self.keys.resource(rn))
            revs.append(_revision(obj.etag, obj.name))
            stamped.append(stamp(obj, now=now, created=False))
        accounted = [i for i, o in enumerate(stamped) if is_accounted(o) and needs_previous(o)]
        values = [codec.encode(o) for o in stamped]
        async with self._usage_lock(self._tenants_of([stamped[i] for i in accounted])):
            for _ in range(USAGE_RETRIES):
                compare = [cmp_mod(k, r) for k, r in zip(keys, revs, strict=True)]
                success = [op_put(k, v) for k, v in zip(keys, values, strict=True)]
                if accounted:
                    extra_cmp, extra_ops = await self._usage_changes(
                        [stamped[i] for i in accounted],
                        [keys[i] for i in accounted],
                        [revs[i] for i in accounted],
                    )
                    compare += extra_cmp
                    success += extra_ops
                res = await self.kv.txn(compare, success, [op_get(k) for k in keys])
                if res.succeeded:
                    return [_with_etag(o, str(res.revision)) for o in stamped]
                for obj, rev, got in zip(stamped, revs, res.ranges, strict=True):
                    if not got:
                        raise RecordGone(obj.name)
                    if got[0].mod_revision != rev:
                        raise RecordChanged(obj.name, rev, got[0].mod_revision)
            raise Aborted("too much contention on tenant usage; retry")

    async def _usage_changes(
        self, objs: Sequence[object], keys: Sequence[bytes], revs: Sequence[int]
    ) -> _TxnParts:
        """Compares and puts that move the usage counters by new - old usage
        (the stored records and the counters read in one round-trip)."""
        tenants = sorted(set(self._tenants_of(objs)))
        got, _ = await self.kv.get_many([*keys, *(self.keys.usage(t) for t in tenants)])
        deltas: dict[str, QuotaUsage] = {}
        for obj, kv, rev in zip(objs, got, revs, strict=False):
            name = getattr(obj, "name", "?")
            if kv is None:
                raise RecordGone(name)
            if kv.mod_revision != rev:
                raise RecordChanged(name, rev, kv.mod_revision)
            delta = usage_of(obj) - usage_of(codec.decode(type(obj), kv.value))
            if not delta.is_zero:
                tenant = parse_name(name).tenant or ""
                deltas[tenant] = deltas.get(tenant, ZERO) + delta
        counters = dict(zip(tenants, got[len(keys) :], strict=True))
        return self._usage_parts(deltas, counters)

    async def _usage_ops(self, deltas: dict[str, QuotaUsage]) -> _TxnParts:
        tenants = sorted(deltas)
        got, _ = await self.kv.get_many([self.keys.usage(t) for t in tenants])
        return self._usage_parts(deltas, dict(zip(tenants, got, strict=True)))

    def _usage_parts(
        self, deltas: dict[str, QuotaUsage], counters: dict[str, KV | None]
    ) -> _TxnParts:
        """Compare each counter's revision and put it moved by its delta
        (never below zero)."""
        compare: builtins.list[Any] = []
        ops: builtins.list[Any] = []
        for tenant in sorted(deltas):
            self._usage_seen.pop(tenant, None)
            kv = counters[tenant]
            used = codec.decode(QuotaUsage, kv.value) if kv else ZERO
            new = used + deltas[tenant]
            new = QuotaUsage(instances=max(new.instances, 0), volume_gib=max(new.volume_gib, 0))
            compare.append(cmp_mod(self.keys.usage(tenant), kv.mod_revision if kv else 0))
            ops.append(op_put(self.keys.usage(tenant), codec.encode(new)))
        return compare, ops

    async def mutate(
        self,
        cls: type[R],
        name: str,
        change: Callable[[R], R],
        *,
        etag: str = "",
        attempts: int = 16,
    ) -> R:
        """Read-modify-write: ``change(current)`` then CAS.  Without *etag*
        a lost race re-reads and re-applies *change* (it must be pure); with
        *etag* the current record must carry it (``Aborted`` otherwise).
        *change* may raise (e.g. ``InvalidTransition``) to refuse."""
        for _ in range(attempts):
            current = await self.get(cls, name)
            if etag and current.etag != etag:
                raise Aborted(f"{name}: etag {etag} is stale (now {current.etag})")
            new = change(current)
            if new == current:
                return current
            try:
                return await self.update(new)
            except Aborted:
                if etag:
                    raise
        raise Aborted(f"{name}: too much contention; retry")

    # -- delete -------------------------------------------------------------------------------

    async def delete(self, cls: type[R], name: str, *, etag: str = "") -> None:
        """Delete *name* (compared on *etag* if given), its idempotency record,
        and release its quota usage, in one transaction."""
        rn = parse_name(name, collection=collection_of(cls))
        key = self.keys.resource(rn)
        async with self._usage_lock([rn.tenant] if rn.tenant and is_accounted_kind(cls) else []):
            for _ in range(USAGE_RETRIES):
                kv = await self.kv.get(key)
                if kv is None:
                    raise NotFound(f"{name} not found")
                if etag and str(kv.mod_revision) != etag:
                    raise Aborted(f"{name}: etag {etag} is stale (now {kv.mod_revision})")
                current = codec.decode(cls, kv.value)
                compare = [cmp_mod(key, kv.mod_revision)]
                success = [op_delete(key)]
                request_id = getattr(current, "request_id", "")
                if request_id and rn.tenant:
                    success.append(op_delete(self.keys.request(rn.tenant, request_id)))
                used = usage_of(current)
                if not used.is_zero and rn.tenant:
                    extra_cmp, extra_ops = await self._usage_ops({rn.tenant: ZERO - used})
                    compare += extra_cmp
                    success += extra_ops
                if rn.collection == "tenants":
                    success.append(op_delete(self.keys.usage(rn.ids[0])))
                res = await self.kv.txn(compare, success)
                if res.succeeded:
                    return
                if etag:
                    raise Aborted(f"{name} was modified concurrently")
            raise Aborted(f"{name}: too much contention; retry")

    # -- watch --------------------------------------------------------------------------------

    async def watch(
        self, cls: type[R], *, start_revision: int, parent: str = ""
    ) -> AsyncGenerator[WatchEvent[R], None]:
        """Changes to *cls* records below *parent* from *start_revision*
        (inclusive), forever; resumes by itself across short etcd outages."""
        coll = collection_of(cls)
        prefix = self.keys.collection_prefix(coll, parent_ids(coll, parent))
        async for deleted, kv in self.kv.watch_resuming(prefix, start_revision=start_revision):
            name = self.keys.name_of_key(kv.key)
            obj = None if deleted else codec.decode(cls, kv.value, etag=etag_of(kv))
            yield WatchEvent(deleted, name, obj, kv.mod_revision)

    def watch_raw(
        self, prefix: bytes, *, start_revision: int
    ) -> AsyncGenerator[tuple[bool, KV], None]:
        """``(deleted, kv)`` for every change under *prefix* (see ``EtcdKV.watch_resuming``)."""
        return self.kv.watch_resuming(prefix, start_revision=start_revision)


async def _backoff(attempt: int) -> None:
    """Jittered exponential pause before retrying a lost usage race (1 ms .. 50 ms)."""
    await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))


def _with_etag(obj: R, etag: str) -> R:
    return dataclasses.replace(obj, etag=etag)  # type: ignore[type-var]


def _encode_token(key: bytes, scope: str) -> str:
    raw = json.dumps({"k": base64.b64encode(key).decode(), "s": scope}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, scope: str) -> bytes:
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
