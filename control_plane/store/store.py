"""``Store``: typed records in etcd with compare-and-swap, quotas and idempotency.

Every write is ONE etcd transaction, so a crash never leaves half a change.
The shapes (``k`` = the record's key, ``u`` = ``usage/{t}`` (charged),
``r`` = ``released/{t}``, ``q`` = ``requests/{t}/{id}``, ``t`` =
``tenants/{t}``, ``c`` = each claim of the record (``records.claims_of``:
``addresses/``, ``macs/``, ``vnis/``), ``n`` = the record's name)::

    create   if version(k)=0 [and version(q)=0] [and version(c)=0 ...]
                [and mod(u)=seen and mod(t)=seen]   [or, no quota: version(t)>0]
             then put k [put q] [put c=n ...] [put u+delta]
             else get k, get t, get u, get q, get r [, get c ...]  -> decide / retry
    update   if mod(k_i)=etag_i for every record [and mod(t), mod(u)=seen: growth]
                [and mod(r)=seen: release]
             then put k_i... [put u+growth] [put r+release]
             else get k_i..., get u, r, t            -> Aborted / NotFound / retry
    delete   if mod(k)=seen [and value(c)=n ...] [and mod(r)=seen]
             then delete k [delete q] [delete c ...] [put r+usage]
             else get k [, get c ...]     -> a claim not held by n: left alone, retry

``create_or_replay(..., together=[...])`` adds ``mod(x)=etag`` / ``put x``
for each of the given existing records to the create txn (the API creates
an instance already bound to its host that way).  ``update_many_batched``
(controllers) queues the call: while one batched txn is in flight the
next calls accumulate, and are sent as ONE ``update_many`` of all their
records; if it fails, each call is retried alone, so the outcome of each
is what its own ``update_many`` would have given.

Quota usage is two monotonic counters per tenant: ``usage/{t}`` (what was
charged: creates, growth) and ``released/{t}`` (what was given back:
terminations, deletes); a tenant uses ``usage - released``.  A charge
compares the tenant and the charged counter and judges the quota on the
released counter as last seen -- never compared, because a stale (lower)
released value only overstates usage, so the check stays safe (and a
refusal is only given on freshly read values).  A release compares only
the released counter.  So the APIs' creates and the controllers'
terminations never invalidate each other's transactions.

The etag of a record is its key's ``mod_revision`` as a decimal string; the
revision of a successful txn becomes the etag of everything it wrote.
Retries happen only when a *usage counter* moved (another write of the
same tenant won); a moved record always surfaces as ``Aborted``.

"seen" usage is what this replica last read or wrote (merged by
revision): writes that move a tenant's counters are queued on a per-tenant
lock, and a write remembers the counter it wrote, so the next one goes
straight to the txn.  With charges and releases in separate counters, the
only writers of a counter are, in practice, one replica's APIs (charges) or
the leading controllers (releases), so that memory stays fresh without a
watch (a watch was tried: under load it lags etcd by seconds and only adds
events to parse).  A stale memory only costs one failed txn (whose failure branch
returns the fresh tenant and counters).  ``update_many(previous=...)``
takes the records as the caller read them, so a usage-moving update (a
termination) needs no read either.

Lists walk ``[prefix, prefix_end)`` in key order; ``page_token`` is an
opaque base64 of ``{"k": last key returned, "s": scope}`` where scope ties
the token to the (kind, parent, filter) it was issued for.  Filters
(``domain.filtering``) are applied in the store after decoding, reading
batches until the page is full.

``watch`` turns etcd watch events into ``WatchEvent``s (every local watcher
of a prefix shares one etcd watch, ``watch_hub``, and each event is decoded
once) and, when etcd is briefly unreachable, resumes from the last delivered revision (skipping keys
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
    BmaasError,
    InvalidArgument,
    NotFound,
    QuotaExceeded,
)
from control_plane.domain.filtering import Filter, parse_filter
from control_plane.domain.names import parse_name
from control_plane.domain.tenant import QuotaUsage, Tenant
from control_plane.domain.validation import validate_page_size, validate_request_id
from control_plane.store import codec
from control_plane.store.endpoints import Endpoint, Tls
from control_plane.store.errors import (
    AddressInUse,
    ClaimTaken,
    MacInUse,
    RecordChanged,
    RecordGone,
    VniInUse,
)
from control_plane.store.keys import DEFAULT_ROOT, KeySpace, parent_ids, prefix_range_end
from control_plane.store.kv import (
    KV,
    EtcdKV,
    Fence,
    Stats,
    cmp_absent,
    cmp_mod,
    cmp_present,
    cmp_value,
    current_fence,
    fenced,
    op_delete,
    op_get,
    op_put,
)
from control_plane.store.record_cache import RecordCache
from control_plane.store.records import (
    ZERO,
    Claim,
    R,
    claims_of,
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
#: a tenant's (tenant record, ``usage/{t}`` charged, ``released/{t}``) versions
_Seen = tuple[KV | None, KV | None, KV | None]

#: How many times a write is retried when only the tenant's usage counter moved.
USAGE_RETRIES = 200
LIST_BATCH = 500
SNAPSHOT_BATCH = 2000
#: decoded watch events kept so that local watchers of one prefix decode each once
WATCH_MEMO = 1024
#: records per batched transaction (etcd allows 128 ops per txn branch by
#: default; the failure branch also reads 3 counters per tenant)
BATCH_MAX = 32


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


@dataclass(frozen=True, slots=True)
class Created(Generic[T]):
    """What ``Store.create_or_replay`` did: ``replayed`` is True when the
    ``request_id`` had already been used and ``record`` is the record the
    first call created (as stored now), not *obj*."""

    record: T
    replayed: bool
    #: the records written in the same transaction (``together``), as written
    together: tuple[Any, ...] = ()


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
    #: the values the record holds exclusively, with their claim keys
    claims: tuple[tuple[Claim, bytes], ...] = ()

    @property
    def charges(self) -> bool:
        return bool(self.tenant) and not self.delta.is_zero


@dataclass(frozen=True, slots=True, kw_only=True)
class _Batched:
    """One ``update_many_batched`` call waiting for a shared txn."""

    objs: list[Any]
    previous: list[Any]
    keys: frozenset[bytes]
    future: asyncio.Future[Any]
    #: the caller's leader fence: only calls under the same fence share a txn
    fence: Fence | None = None


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
        from control_plane.store.consoles import Consoles
        from control_plane.store.election import Elections
        from control_plane.store.liveness import Liveness
        from control_plane.store.tenant_tokens import TenantTokens

        self.liveness = Liveness(kv, self.keys, clock=clock)
        self.elections = Elections(kv, self.keys)
        self.reports = AgentReports(self)
        self.consoles = Consoles(kv, self.keys)
        self.tenant_tokens = TenantTokens(self)
        self._usage_locks: dict[str, asyncio.Lock] = {}
        #: tenant -> (tenant record, charged counter, released counter) as last seen
        self._usage_seen: dict[str, _Seen] = {}
        self._watch_memo: dict[tuple[type, bytes, int], Any] = {}
        self._caches: dict[type, RecordCache[Any]] = {}
        #: ``update_batched`` calls waiting for the next shared txn
        self._batch: builtins.list[_Batched] = []
        self._batch_task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = 2379,
        *,
        root: str = DEFAULT_ROOT,
        rpc_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        endpoints: Sequence[Endpoint] = (),
        tls: Tls | None = None,
    ) -> Store:
        """A store on etcd at *endpoints* (every member of a cluster; default
        ``host:port`` alone), over TLS when *tls* is given."""
        kv = await EtcdKV.connect(host, port, endpoints=endpoints, tls=tls, rpc_timeout=rpc_timeout)
        return cls(kv, root=root, clock=clock)

    async def probe_quorum(self, *, timeout: float = 1.0) -> int:
        """A linearizable read that only a quorum can answer; its revision.
        ``Unavailable`` when none answers within *timeout* seconds."""
        return await self.kv.probe(self.keys.root.encode(), timeout=timeout)

    async def aclose(self) -> None:
        if self._batch_task is not None:
            self._batch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._batch_task
        for cache in self._caches.values():
            await cache.aclose()
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

    async def get(self, cls: type[R], name: str, *, revision: int = 0) -> R:
        """The record *name* of type *cls* (as of *revision*, if not 0);
        ``NotFound`` if absent."""
        record, _ = await self.get_at(cls, name, revision=revision)
        return record

    async def get_at(self, cls: type[R], name: str, *, revision: int = 0) -> tuple[R, int]:
        """``get``, and the revision it was read at: pass it as *revision*
        to further reads to see one snapshot."""
        key = self.keys.of_name(name, collection=collection_of(cls))
        kvs, _, header = await self.kv.range(key, revision=revision)
        if not kvs:
            raise NotFound(f"{name} not found")
        return codec.decode(cls, kvs[0].value, etag=etag_of(kvs[0])), revision or header

    async def get_many(
        self, cls: type[R], names: Sequence[str], *, revision: int = 0
    ) -> builtins.list[R | None]:
        """The records *names* of type *cls* read at one revision (*revision*,
        if not 0) in one round-trip (None for each one that does not exist)."""
        if not names:
            return []
        coll = collection_of(cls)
        got, _ = await self.kv.get_many(
            [self.keys.of_name(n, collection=coll) for n in names], revision=revision
        )
        return [None if kv is None else codec.decode(cls, kv.value, etag=etag_of(kv)) for kv in got]

    async def addresses_in_use(self, subnet: str) -> set[str]:
        """The IP addresses claimed in *subnet* (an AIP subnet name): one
        keys-only range read."""
        prefix = self.keys.addresses_prefix(subnet)
        kvs, _ = await self._snapshot(prefix, keys_only=True)
        return {self.keys.last_segment(kv.key) for kv in kvs}

    async def get_usage(self, tenant: str) -> QuotaUsage:
        """What *tenant* holds now: charged minus released, read at one revision."""
        (charged, released), _ = await self.kv.get_many(
            [self.keys.usage(tenant), self.keys.released(tenant)]
        )
        return _net(charged, released)

    async def list(
        self,
        cls: type[R],
        *,
        parent: str = "",
        page_size: int = 0,
        page_token: str = "",
        filter: str | Filter = "",
    ) -> Page[R]:
        """One page of *cls* records below *parent*, in key order, matching
        *filter* (text in the store's dialect, or a ``Filter`` the caller built)."""
        coll = collection_of(cls)
        size = validate_page_size(page_size)
        flt = filter if isinstance(filter, Filter) else parse_filter(filter, record_type=cls)
        prefix = self.keys.collection_prefix(coll, parent_ids(coll, parent))
        end = prefix_range_end(prefix)
        scope = hashlib.sha256(b"%s|%s" % (prefix, flt.text.encode())).hexdigest()[:16]
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

    async def list_all(
        self, cls: type[R], *, parent: str = "", revision: int = 0
    ) -> tuple[builtins.list[R], int]:
        """Every *cls* record below *parent* read at ONE revision (*revision*,
        if not 0), and that revision (watch from ``revision + 1`` to follow
        changes)."""
        coll = collection_of(cls)
        prefix = self.keys.collection_prefix(coll, parent_ids(coll, parent))
        kvs = await self._snapshot(prefix, revision=revision)
        items = [codec.decode(cls, kv.value, etag=etag_of(kv)) for kv in kvs[0]]
        return items, kvs[1]

    async def changed_since(self, cls: type[R], revision: int) -> tuple[builtins.list[R], int]:
        """The *cls* records modified after *revision* (one linearizable read,
        filtered by etcd on ``mod_revision``) and the revision read at: what
        a watcher at *revision* has yet to see, deletions left out."""
        prefix = self.keys.collection_prefix(collection_of(cls))
        kvs, _, rev = await self.kv.range(
            prefix, prefix_range_end(prefix), min_mod_revision=revision + 1
        )
        return [codec.decode(cls, kv.value, etag=etag_of(kv)) for kv in kvs], rev

    async def _snapshot(
        self, prefix: bytes, *, keys_only: bool = False, revision: int = 0
    ) -> tuple[builtins.list[KV], int]:
        end = prefix_range_end(prefix)
        out: builtins.list[KV] = []
        start, rev = prefix, revision
        while True:
            kvs, more, header_rev = await self.kv.range(
                start, end, limit=SNAPSHOT_BATCH, revision=rev, keys_only=keys_only
            )
            rev = rev or header_rev
            out.extend(kvs)
            if not more or not kvs:
                return out, rev
            start = kvs[-1].key + b"\0"

    # -- create -------------------------------------------------------------------------------

    async def create(self, obj: R, *, request_id: str = "", fingerprint: str = "") -> R:
        """Store a new record (see ``create_or_replay``, which also says
        whether *request_id* replayed an earlier create); the stored record."""
        return (
            await self.create_or_replay(obj, request_id=request_id, fingerprint=fingerprint)
        ).record

    async def create_or_replay(
        self,
        obj: R,
        *,
        request_id: str = "",
        fingerprint: str = "",
        together: Sequence[Any] = (),
    ) -> Created[R]:
        """Store a new record; ``AlreadyExists`` if its name is taken.

        With *request_id* (tenant-scoped records only) the create is
        idempotent: a retry with the same id returns the record the first
        call created (``InvalidArgument`` if *fingerprint* is given and
        differs from the first call's).  Records that count against a
        quota (instances, volumes) take their usage in the same transaction
        (``QuotaExceeded`` when it would not fit).  Tenant-scoped records
        require their tenant to exist (``NotFound``).

        *together* are existing records (not quota-accounted: a host, a
        placement group) updated in the SAME transaction, each compared on
        its etag: ``RecordChanged`` / ``RecordGone`` naming the first that
        moved, and then nothing was written.  A replayed ``request_id``
        writes none of them.  ``Created.together`` holds them as written.
        """
        plan = self._plan_create(obj, request_id, fingerprint)
        now = self.clock()
        extra_keys: builtins.list[bytes] = []
        extra_revs: builtins.list[int] = []
        extra_objs: builtins.list[Any] = []
        for other in together:
            if is_accounted(other):
                raise InvalidArgument(f"{other.name}: only unaccounted records go together")
            extra_keys.append(self.keys.of_name(other.name, collection=collection_of(type(other))))
            extra_revs.append(_revision(other.etag, other.name))
            extra_objs.append(stamp(other, now=now, created=False))
        extra_values = [codec.encode(o) for o in extra_objs]
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
                        return Created(
                            await self._replay(type(plan.obj), got[3], fingerprint), True
                        )
                    seen, fresh = (got[1], got[2], got[4]), True
                try:
                    compare, success, new_usage = self._create_ops(plan, seen)
                except QuotaExceeded:
                    if fresh:
                        raise
                    seen = None  # judged on cached usage: confirm with a fresh read
                    continue
                failure = [op_get(k) for k in plan.state_keys]
                failure += [op_get(ckey) for _, ckey in plan.claims]
                n_fixed = len(failure)
                for key, rev, value in zip(extra_keys, extra_revs, extra_values, strict=True):
                    compare.append(cmp_mod(key, rev))
                    success.append(op_put(key, value))
                    failure.append(op_get(key))
                res = await self.kv.txn(compare, success, failure)
                if res.succeeded:
                    if seen is not None and new_usage is not None:
                        usage_kv = KV(plan.state_keys[2], new_usage, res.revision, 0, 0, 0)
                        self._usage_seen.setdefault(plan.tenant, (seen[0], usage_kv, seen[2]))
                        self._remember_usage(plan.tenant, usage=usage_kv, owner=seen[0])
                    # not offered to a ``follow_records`` cache: the next writer
                    # of a new record is usually a controller, so by the time
                    # this replica mutates it a cached copy would be stale and
                    # cost a failed txn (a raft write) instead of a read
                    written = _with_etag(plan.obj, str(res.revision))
                    etag = str(res.revision)
                    return Created(written, False, tuple(_with_etag(o, etag) for o in extra_objs))
                record, tenant_kvs, usage_kvs, request, released_kvs = res.ranges[:5]
                if plan.req_key and request:
                    return Created(
                        await self._replay(type(plan.obj), request[0], fingerprint), True
                    )
                if record:
                    raise AlreadyExists(f"{plan.obj.name} already exists")
                for (claim, _), held in zip(plan.claims, res.ranges[5:n_fixed], strict=True):
                    if held:
                        raise _claim_taken(claim)
                if plan.tenant and not tenant_kvs:
                    self._usage_seen.pop(plan.tenant, None)
                    raise NotFound(f"tenants/{plan.tenant} not found")
                seen = (
                    tenant_kvs[0] if tenant_kvs else None,
                    usage_kvs[0] if usage_kvs else None,
                    released_kvs[0] if released_kvs else None,
                )
                fresh = True
                if plan.charges:
                    self._usage_seen[plan.tenant] = seen
                for other, rev, stored in zip(
                    extra_objs, extra_revs, res.ranges[n_fixed:], strict=True
                ):
                    if not stored:
                        raise RecordGone(other.name)
                    if stored[0].mod_revision != rev:
                        raise RecordChanged(other.name, rev, stored[0].mod_revision)
                if plan.charges and attempt:
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
        claims = tuple((c, self.keys.claim(c)) for c in claims_of(obj))
        return _CreatePlan(
            obj=obj,
            key=key,
            value=codec.encode(obj),
            tenant=tenant or "",
            delta=usage_of(obj),
            req_key=req_key,
            req_value=json.dumps({"name": obj.name, "fingerprint": fingerprint}).encode(),
            # read together: [record, tenant, usage, request, released]
            # (absent keys read as the record)
            state_keys=[
                key,
                self.keys.tenant(tenant) if tenant else key,
                self.keys.usage(tenant) if tenant else key,
                req_key or key,
                self.keys.released(tenant) if tenant else key,
            ],
            claims=claims,
        )

    def _create_ops(
        self, plan: _CreatePlan[R], seen: _Seen | None
    ) -> tuple[builtins.list[Any], builtins.list[Any], bytes | None]:
        """Compares and ops of the create txn, and the charged-counter value it
        writes.  The released counter is not compared: a stale (lower) view
        of it only overstates usage, so the quota check stays safe."""
        key, tenant_key, usage_key = plan.state_keys[:3]
        compare = [cmp_absent(key)]
        success = [op_put(key, plan.value)]
        if plan.req_key is not None:
            compare.append(cmp_absent(plan.req_key))
            success.append(op_put(plan.req_key, plan.req_value))
        for _, ckey in plan.claims:
            compare.append(cmp_absent(ckey))
            success.append(op_put(ckey, plan.obj.name.encode()))
        if plan.tenant and not plan.charges:
            compare.append(cmp_present(tenant_key))
        elif plan.charges:
            assert seen is not None
            tenant_kv, usage_kv, released_kv = seen
            if tenant_kv is None:
                raise NotFound(f"tenants/{plan.tenant} not found")
            quota = codec.decode(Tenant, tenant_kv.value).quota
            used = _net(usage_kv, released_kv)
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
            usage_value = codec.encode(_counter(usage_kv) + plan.delta)
            success.append(op_put(usage_key, usage_value))
            return compare, success, usage_value
        return compare, success, None

    async def _replay(self, cls: type[R], record: KV, fingerprint: str) -> R:
        data = json.loads(record.value)
        if fingerprint and data.get("fingerprint") and data["fingerprint"] != fingerprint:
            raise InvalidArgument("request_id was already used for a different request")
        return await self.get(cls, data["name"])

    # -- update -------------------------------------------------------------------------------

    async def update_batched(self, obj: R) -> R:
        """``update`` through ``update_many_batched``."""
        (out,) = await self.update_many_batched([obj])
        return out

    async def update_many_batched(
        self, objs: Sequence[R], *, previous: Iterable[object] = ()
    ) -> builtins.list[R]:
        """``update_many`` for writers that do not care whose txn carries
        the write (controllers): the calls of this replica that come while
        a batch is in flight share the NEXT transaction (every record
        compared on its own etag, usage deltas summed per tenant).  If that
        txn fails (a record moved, a quota), each call's write is tried
        again on its own, so every caller gets exactly what ``update_many``
        would have given it -- only the round trips are shared."""
        group = _Batched(
            objs=builtins.list(objs),
            previous=builtins.list(previous),
            keys=frozenset(
                self.keys.of_name(o.name, collection=collection_of(type(o))) for o in objs
            ),
            future=asyncio.get_running_loop().create_future(),
            fence=current_fence(),
        )
        self._batch.append(group)
        if self._batch_task is None or self._batch_task.done():
            self._batch_task = asyncio.get_running_loop().create_task(
                self._run_batches(), name="store-batched-updates"
            )
        result: builtins.list[R] = await group.future
        return result

    async def _run_batches(self) -> None:
        """Send the waiting ``update_many_batched`` writes, one txn at a time."""
        batch: builtins.list[_Batched] = []
        try:
            while self._batch:
                keys: set[bytes] = set()
                batch, rest, size = [], [], 0
                for group in self._batch:
                    if group.future.done():
                        continue  # the caller went away before its write was sent
                    if (
                        keys & group.keys
                        or (batch and size + len(group.objs) > BATCH_MAX)
                        or (batch and group.fence is not batch[0].fence)
                    ):
                        rest.append(group)  # one put per key per txn: next round
                    else:
                        keys |= group.keys
                        size += len(group.objs)
                        batch.append(group)
                self._batch = rest
                if len(batch) == 1:
                    await self._settle(batch[0])
                elif batch:
                    await self._write_batch(batch)
        except BaseException:  # cancelled (aclose): nobody may wait forever
            for group in (*batch, *self._batch):
                group.future.cancel()
            self._batch = []
            raise

    async def _settle(self, group: _Batched) -> None:
        try:
            with fenced(group.fence):  # the caller's fence, not the batch task's
                result = await self.update_many(group.objs, previous=group.previous)
        except Exception as exc:  # handed to the caller, as ``update_many`` would raise it
            if not group.future.done():
                group.future.set_exception(exc)
        else:
            if not group.future.done():
                group.future.set_result(result)

    async def _write_batch(self, batch: Sequence[_Batched]) -> None:
        try:
            with fenced(batch[0].fence):
                written = await self.update_many(
                    [o for g in batch for o in g.objs],
                    previous=[p for g in batch for p in g.previous],
                )
        except Exception:
            # a record moved, a quota, etcd trouble: let each write meet it alone
            await asyncio.gather(*(self._settle(group) for group in batch))
            return
        at = 0
        for group in batch:
            if not group.future.done():
                group.future.set_result(written[at : at + len(group.objs)])
            at += len(group.objs)

    async def update(self, obj: R) -> R:
        """Compare-and-swap *obj* on its ``etag``; ``Aborted`` if the stored
        record moved since it was read, ``NotFound`` if it is gone."""
        (out,) = await self.update_many([obj])
        return out

    async def update_many(
        self, objs: Sequence[R], *, previous: Iterable[object] = ()
    ) -> builtins.list[R]:
        """Write several records in ONE transaction, each compared on its own
        etag: all are written or none (e.g. bind an instance to a host).

        Usage deltas (an instance reaching TERMINATED, a volume resize) are
        applied to the tenants' usage counters in the same transaction; a
        growth must fit the tenant's quota (``QuotaExceeded``).  *previous*
        may hold the records as the caller read them (matched by name; used
        only if the etag is the one compared): then the deltas need no read
        of the stored records, and with this replica's view of the counters
        (``_usage_seen``) such an update is ONE round trip.  A stale view only
        costs a failed txn, whose failure branch returns the fresh values.
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
        tenants = sorted(set(self._tenants_of([stamped[i] for i in accounted])))
        known: dict[int, object] = {}
        if accounted:
            by_name = {getattr(p, "name", None): p for p in previous}
            for i in accounted:
                prev = by_name.get(stamped[i].name)
                if prev is not None and getattr(prev, "etag", "") == objs[i].etag:
                    known[i] = prev
        # per tenant: usage (charged), released, tenant -- what the failure branch returns
        state_keys = [
            k
            for t in tenants
            for k in (self.keys.usage(t), self.keys.released(t), self.keys.tenant(t))
        ]
        failure = [op_get(k) for k in (*keys, *state_keys)]
        async with self._usage_lock(tenants):
            fresh = False  # usage state read (or returned by a failed txn) just now
            for attempt in range(USAGE_RETRIES):
                compare = [cmp_mod(k, r) for k, r in zip(keys, revs, strict=True)]
                success = [op_put(k, v) for k, v in zip(keys, values, strict=True)]
                new_counters: builtins.list[tuple[str, bytes, bytes]] = []
                if accounted:
                    if len(known) < len(accounted) or any(
                        t not in self._usage_seen for t in tenants
                    ):
                        await self._read_usage_state(stamped, keys, revs, accounted, known)
                        fresh = True
                    deltas: dict[str, QuotaUsage] = {}
                    for i in accounted:
                        delta = usage_of(stamped[i]) - usage_of(known[i])
                        if not delta.is_zero:
                            tenant = parse_name(stamped[i].name).tenant or ""
                            deltas[tenant] = deltas.get(tenant, ZERO) + delta
                    try:
                        extra_cmp, extra_ops, new_counters = self._usage_parts(
                            deltas, {t: self._usage_seen[t] for t in deltas}
                        )
                    except (QuotaExceeded, NotFound):
                        if fresh:
                            raise
                        for t in tenants:  # judged on remembered values: confirm with a read
                            self._usage_seen.pop(t, None)
                        continue
                    compare += extra_cmp
                    success += extra_ops
                res = await self.kv.txn(
                    compare, success, failure if accounted else failure[: len(keys)]
                )
                if res.succeeded:
                    for tenant, key, value in new_counters:
                        counter_kv = KV(key, value, res.revision, 0, 0, 0)
                        if key == self.keys.usage(tenant):
                            self._remember_usage(tenant, usage=counter_kv)
                        else:
                            self._remember_usage(tenant, released=counter_kv)
                    return [_with_etag(o, str(res.revision)) for o in stamped]
                for obj, rev, got in zip(stamped, revs, res.ranges, strict=False):
                    if not got:
                        raise RecordGone(obj.name)
                    if got[0].mod_revision != rev:
                        raise RecordChanged(obj.name, rev, got[0].mod_revision)
                # only a usage counter (or a tenant) moved: go again with the
                # fresh values the failure branch brought
                for i in accounted:
                    known[i] = codec.decode(type(stamped[i]), res.ranges[i][0].value)
                n = len(keys)
                for j, tenant in enumerate(tenants):
                    usage_got, released_got, tenant_got = res.ranges[n + 3 * j : n + 3 * j + 3]
                    self._usage_seen[tenant] = (
                        tenant_got[0] if tenant_got else None,
                        usage_got[0] if usage_got else None,
                        released_got[0] if released_got else None,
                    )
                fresh = True
                if attempt:
                    await _backoff(attempt)
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
        and usage counters in one round trip (into *known* / ``_usage_seen``)."""
        tenants = sorted(set(self._tenants_of([objs[i] for i in accounted])))
        got, _ = await self.kv.get_many(
            [
                *(keys[i] for i in accounted),
                *(self.keys.usage(t) for t in tenants),
                *(self.keys.released(t) for t in tenants),
                *(self.keys.tenant(t) for t in tenants),
            ]
        )
        for j, i in enumerate(accounted):
            name = getattr(objs[i], "name", "?")
            kv = got[j]
            if kv is None:
                raise RecordGone(name)
            if kv.mod_revision != revs[i]:
                raise RecordChanged(name, revs[i], kv.mod_revision)
            known[i] = codec.decode(type(objs[i]), kv.value)
        n, m = len(accounted), len(tenants)
        for j, tenant in enumerate(tenants):
            self._usage_seen[tenant] = (got[n + 2 * m + j], got[n + j], got[n + m + j])

    def _remember_usage(
        self,
        tenant: str,
        *,
        usage: KV | None = None,
        owner: KV | None = None,
        released: KV | None = None,
    ) -> None:
        """Merge newer versions of *tenant*'s counters / tenant record into
        ``_usage_seen`` (a version older than the one held is ignored: txn
        results of concurrent writes come back in any order)."""
        held = self._usage_seen.get(tenant)
        if held is None:
            return  # only a full read starts an entry
        self._usage_seen[tenant] = (
            _newer(held[0], owner),
            _newer(held[1], usage),
            _newer(held[2], released),
        )

    async def _usage_ops(self, deltas: dict[str, QuotaUsage]) -> _TxnParts:
        """Releases (negative *deltas*) on freshly read counters."""
        tenants = sorted(deltas)
        got, _ = await self.kv.get_many([self.keys.released(t) for t in tenants])
        for t in tenants:
            self._usage_seen.pop(t, None)
        seen: dict[str, _Seen] = {t: (None, None, kv) for t, kv in zip(tenants, got, strict=True)}
        compare, ops, _ = self._usage_parts(deltas, seen)
        return compare, ops

    def _usage_parts(
        self, deltas: dict[str, QuotaUsage], seen: dict[str, _Seen]
    ) -> tuple[builtins.list[Any], builtins.list[Any], builtins.list[tuple[str, bytes, bytes]]]:
        """Compares and puts that apply *deltas*, and the counters written
        (tenant, key, value).  Growth goes to ``usage/{t}`` (charged): it
        must fit the tenant's quota (``QuotaExceeded``) judged on charged
        minus released, and the txn compares the tenant and the charged
        counter -- NOT the released one, whose stale (lower) value only
        overstates usage.  Shrinkage goes to ``released/{t}``, compared on
        its own revision.  So releases (terminations in the controllers)
        and charges (creates in the APIs) never invalidate each other's txn.
        """
        compare: builtins.list[Any] = []
        ops: builtins.list[Any] = []
        written: builtins.list[tuple[str, bytes, bytes]] = []
        for tenant in sorted(deltas):
            owner, charged_kv, released_kv = seen[tenant]
            delta = deltas[tenant]
            grow = QuotaUsage(
                instances=max(delta.instances, 0), volume_gib=max(delta.volume_gib, 0)
            )
            shrink = grow - delta
            if not grow.is_zero:
                if owner is None:
                    raise NotFound(f"tenants/{tenant} not found")
                quota = codec.decode(Tenant, owner.value).quota
                used = _net(charged_kv, released_kv)
                new = used + delta
                if not new.fits(quota):
                    raise QuotaExceeded(
                        f"tenants/{tenant}: quota exceeded (using {used.instances} instances"
                        f" / {used.volume_gib} GiB of {quota.max_instances} / "
                        f"{quota.max_volume_gib} GiB; the change needs {delta.instances} / "
                        f"{delta.volume_gib} GiB more)"
                    )
                key = self.keys.usage(tenant)
                value = codec.encode(_counter(charged_kv) + grow)
                compare.append(cmp_mod(self.keys.tenant(tenant), owner.mod_revision))
                compare.append(cmp_mod(key, charged_kv.mod_revision if charged_kv else 0))
                ops.append(op_put(key, value))
                written.append((tenant, key, value))
            if not shrink.is_zero:
                key = self.keys.released(tenant)
                value = codec.encode(_counter(released_kv) + shrink)
                compare.append(cmp_mod(key, released_kv.mod_revision if released_kv else 0))
                ops.append(op_put(key, value))
                written.append((tenant, key, value))
        return compare, ops, written

    async def follow_records(self, cls: type[R]) -> None:
        """Keep recently seen *cls* records fresh from a watch, so ``mutate``
        of them usually needs no read (``control_plane.store.record_cache``)."""
        if cls in self._caches:
            return
        cache = RecordCache(self.kv, cls, self.keys.collection_prefix(collection_of(cls)))
        self._caches[cls] = cache
        cache.start(await self.current_revision() + 1, self.current_revision)

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
        *change* may raise (e.g. ``InvalidTransition``) to refuse.

        For a kind followed with ``follow_records`` the first "read" is the
        cached version (or, if none, a serializable read); the CAS txn returns
        the stored version when that was stale, and any decision that would
        not write (no change, a refusal, an etag mismatch) is taken on a
        freshly (linearizably) read record only.
        """
        coll = collection_of(cls)
        key = self.keys.of_name(name, collection=coll)
        cache = self._caches.get(cls)
        current = cache.get(key) if cache is not None else None
        cached = current is not None
        if current is None and cache is not None:
            # not cached (the watch lags, or the record is new): a
            # serializable read -- no consensus round in etcd; it may be as
            # stale as a cached copy, so it is treated like one
            kvs, _, _ = await self.kv.range(key, serializable=True)
            if kvs:
                current, cached = codec.decode(cls, kvs[0].value, etag=etag_of(kvs[0])), True
        if current is None:
            current = await self.get(cls, name)
        for attempt in range(attempts):
            try:
                if etag and current.etag != etag:
                    raise Aborted(f"{name}: etag {etag} is stale (now {current.etag})")
                new = change(current)
            except BmaasError:
                if not cached:
                    raise
                current, cached = await self.get(cls, name), False
                continue
            if new == current:
                if not cached:
                    return current
                current, cached = await self.get(cls, name), False
                continue
            if is_accounted(new) and needs_previous(new):
                try:
                    (out,) = await self.update_many([new], previous=[current])
                    return out
                except Aborted:
                    if etag and not cached:
                        raise
                    current, cached = await self.get(cls, name), False
                    continue
            stamped = stamp(new, now=self.clock(), created=False)
            res = await self.kv.txn(
                [cmp_mod(key, _revision(new.etag, name))],
                [op_put(key, codec.encode(stamped))],
                [op_get(key)],
            )
            if res.succeeded:
                written = _with_etag(stamped, str(res.revision))
                if cache is not None:
                    cache.offer(key, written, res.revision)
                return written
            got = res.ranges[0]
            if not got:
                raise NotFound(f"{name} not found")
            if etag and not cached:
                raise Aborted(f"{name} was modified concurrently")
            current, cached = codec.decode(cls, got[0].value, etag=etag_of(got[0])), False
            if attempt:
                await _backoff(attempt)  # several writers keep racing on this record
        raise Aborted(f"{name}: too much contention; retry")

    # -- delete -------------------------------------------------------------------------------

    async def delete(self, cls: type[R], name: str, *, etag: str = "") -> None:
        """Delete *name* (compared on *etag* if given), its idempotency record,
        its claims (those it holds: a claim key holding another name, or none,
        is left alone) and release its quota usage, in one transaction."""
        rn = parse_name(name, collection=collection_of(cls))
        key = self.keys.resource(rn)
        #: claim keys found NOT held by this record (one stored before its
        #: kind had claims): a failed txn names them, the next one skips them
        foreign: set[bytes] = set()
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
                ckeys = [self.keys.claim(c) for c in claims_of(current)]
                for ckey in ckeys:
                    if ckey not in foreign:
                        compare.append(cmp_value(ckey, name.encode()))
                        success.append(op_delete(ckey))
                used = usage_of(current)
                if not used.is_zero and rn.tenant:
                    extra_cmp, extra_ops = await self._usage_ops({rn.tenant: ZERO - used})
                    compare += extra_cmp
                    success += extra_ops
                if rn.collection == "tenants":
                    success.append(op_delete(self.keys.usage(rn.ids[0])))
                    success.append(op_delete(self.keys.released(rn.ids[0])))
                failure = [op_get(k) for k in (key, *ckeys)] if ckeys else []
                res = await self.kv.txn(compare, success, failure)
                if res.succeeded:
                    return
                if ckeys:
                    stored, held = res.ranges[0], res.ranges[1:]
                    lost = {
                        ckey
                        for ckey, got in zip(ckeys, held, strict=True)
                        if ckey not in foreign and (not got or got[0].value != name.encode())
                    }
                    if lost and stored and stored[0].mod_revision == kv.mod_revision:
                        # the record is as read: only claims it does not hold failed
                        # the compare -- delete it without them
                        foreign |= lost
                        continue
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
        memo = self._watch_memo
        async for deleted, kv in self.kv.watch_shared(prefix, start_revision=start_revision):
            name = self.keys.name_of_key(kv.key)
            obj = None
            if not deleted:
                # the same event reaches every local watcher of the prefix:
                # decode it once (records are frozen, so sharing is safe)
                mkey = (cls, kv.key, kv.mod_revision)
                obj = memo.get(mkey)
                if obj is None:
                    if len(memo) >= WATCH_MEMO:
                        memo.clear()
                    obj = memo[mkey] = codec.decode(cls, kv.value, etag=etag_of(kv))
            yield WatchEvent(deleted, name, obj, kv.mod_revision)

    async def watch_names(
        self, cls: type[R], *, start_revision: int
    ) -> AsyncGenerator[tuple[str, int], None]:
        """``(name, revision)`` of every change to a *cls* record, values not
        decoded (for watchers that only need to know *what* changed)."""
        prefix = self.keys.collection_prefix(collection_of(cls))
        async for _deleted, kv in self.kv.watch_shared(prefix, start_revision=start_revision):
            yield self.keys.name_of_key(kv.key), kv.mod_revision

    def watch_raw(
        self, prefix: bytes, *, start_revision: int
    ) -> AsyncGenerator[tuple[bool, KV], None]:
        """``(deleted, kv)`` for every change under *prefix* (see ``EtcdKV.watch_resuming``)."""
        return self.kv.watch_shared(prefix, start_revision=start_revision)


def _claim_taken(claim: Claim) -> ClaimTaken:
    """The error for a create that lost *claim* to another record."""
    if claim.kind == "address":
        return AddressInUse(claim.scope, claim.value)
    if claim.kind == "mac":
        return MacInUse(claim.value)
    if claim.kind == "vni":
        return VniInUse(claim.value)
    return ClaimTaken(claim.value)


def _counter(kv: KV | None) -> QuotaUsage:
    return codec.decode(QuotaUsage, kv.value) if kv is not None else ZERO


def _net(charged: KV | None, released: KV | None) -> QuotaUsage:
    """Usage held now: charged minus released (never below zero)."""
    used = _counter(charged) - _counter(released)
    return QuotaUsage(instances=max(used.instances, 0), volume_gib=max(used.volume_gib, 0))


def _newer(held: KV | None, offered: KV | None) -> KV | None:
    if offered is None or (held is not None and held.mod_revision >= offered.mod_revision):
        return held
    return offered


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
