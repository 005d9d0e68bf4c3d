"""Creates: a new record with its idempotency record, its claims and its
quota charge, in ONE transaction.

The shape (``k`` = the record's key, ``q`` = ``requests/{t}/{id}``,
``c`` = each claim of the record (``records.claims_of``: ``addresses/``,
``macs/``, ``vnis/``), ``t`` = ``tenants/{t}``, ``u`` = ``usage/{t}``,
``x`` = each existing record written ``together``)::

    if version(k)=0 [and version(q)=0] [and version(c)=0 ...]
       [and mod(t)=seen and mod(u)=seen: a charge]  [or, no charge: version(t)>0]
       [and mod(x)=etag ...]
    then put k [put q] [put c=name ...] [put u+delta] [put x ...]
    else get k [, q] [, c ...] [, u, r, t] [, x ...]   -> replay / decide / retry

Group commit: a create that charges a tenant goes alone when no other
create of the tenant is in flight on this replica; the ones that come
meanwhile wait for that txn and then go TOGETHER in one txn (their compares
and writes side by side, one compare of the tenant's counter, the counter
raised by their sum).  When the group's txn does not commit (a name, a claim
or a request id taken, a record moved, the quota, the counter moved), each
create of the group is tried alone and meets its own reason.  No lock: a
create never waits for another's outcome, only for the next txn, and the
quota is judged in etcd by the counter's compare.

A failed txn says why by what its failure branch read: the request id
taken (a retry: the first call's record is returned, "replayed"), the
name taken (``AlreadyExists``), a claim taken (``AddressInUse``,
``MacInUse``, ``VniInUse``), the tenant gone (``NotFound``), a together
record moved (``RecordChanged``/``RecordGone``); otherwise only the usage
counter moved (another charge of the tenant won): go again with the fresh
counters it returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from control_plane.domain.errors import (
    Aborted,
    AlreadyExists,
    InvalidArgument,
    NotFound,
    QuotaExceeded,
)
from control_plane.domain.names import parse_name
from control_plane.domain.tenant import QuotaUsage
from control_plane.domain.validation import validate_request_id
from control_plane.store import codec, etags
from control_plane.store.errors import (
    AddressInUse,
    ClaimTaken,
    MacInUse,
    RecordChanged,
    RecordGone,
    VniInUse,
)
from control_plane.store.keys import KeySpace
from control_plane.store.kv import KV, EtcdKV, Fence, current_fence, fenced
from control_plane.store.quota import USAGE_RETRIES, QuotaLedger, Seen, StateReads
from control_plane.store.records import (
    ZERO,
    Claim,
    R,
    claims_of,
    collection_of,
    is_accounted,
    stamp,
    usage_of,
)
from control_plane.store.txn import Read, Txn

T = TypeVar("T")

#: creates per group transaction (each writes 2-6 keys; etcd allows 128 ops
#: per txn branch by default)
GROUP_MAX = 16


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
class _Plan(Generic[T]):
    obj: T
    name: str
    key: bytes
    value: bytes
    tenant: str
    delta: QuotaUsage
    req_key: bytes | None
    req_value: bytes
    #: the values the record holds exclusively, with their claim keys
    claims: tuple[tuple[Claim, bytes], ...] = ()

    @property
    def charges(self) -> bool:
        return bool(self.tenant) and not self.delta.is_zero


@dataclass(frozen=True, slots=True)
class _Together:
    obj: Any
    key: bytes
    revision: int
    value: bytes


@dataclass(frozen=True, slots=True)
class _Pending:
    """A charging create waiting for its tenant's next group."""

    plan: _Plan[Any]
    extra: list[_Together]
    fingerprint: str
    cls: type[Any]
    future: asyncio.Future[Created[Any]]

    def keys(self) -> set[bytes]:
        """Every key the create writes (one put per key per txn)."""
        plan = self.plan
        out = {plan.key, *(ckey for _, ckey in plan.claims), *(x.key for x in self.extra)}
        if plan.req_key:
            out.add(plan.req_key)
        return out


def _disjoint(waiting: list[_Pending]) -> tuple[list[_Pending], list[_Pending]]:
    """The longest prefix-greedy group of *waiting* writing no key twice
    (at most ``GROUP_MAX``), and the rest."""
    group: list[_Pending] = []
    rest: list[_Pending] = []
    used: set[bytes] = set()
    for p in waiting:
        keys = p.keys()
        if len(group) < GROUP_MAX and not keys & used:
            group.append(p)
            used |= keys
        else:
            rest.append(p)
    return group, rest


class Creator:
    def __init__(
        self, kv: EtcdKV, keys: KeySpace, ledger: QuotaLedger, clock: Callable[[], float]
    ) -> None:
        self._kv = kv
        self._keys = keys
        self._ledger = ledger
        self._clock = clock
        #: (tenant, id of the leader fence) -> charging creates waiting for
        #: the tenant's in-flight txn
        self._flights: dict[tuple[str, int], list[_Pending]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    async def create_or_replay(
        self,
        obj: R,
        *,
        request_id: str = "",
        fingerprint: str = "",
        together: Sequence[Any] = (),
    ) -> Created[R]:
        plan = self._plan(obj, request_id, fingerprint)
        now = self._clock()
        extra: list[_Together] = []
        for other in together:
            if is_accounted(other):
                raise InvalidArgument(f"{other.name}: only unaccounted records go together")
            stamped = stamp(other, now=now, created=False)
            extra.append(
                _Together(
                    stamped,
                    self._keys.of_name(other.name, collection=collection_of(type(other))),
                    etags.revision_of(other.etag, other.name),
                    codec.encode(stamped),
                )
            )
        if plan.charges:
            return await self._grouped(plan, extra, fingerprint, type(obj))
        return await self._one(plan, extra, fingerprint, type(obj))

    async def _one(
        self, plan: _Plan[Any], extra: list[_Together], fingerprint: str, cls: type[R]
    ) -> Created[R]:
        """One create in its own transaction, retried while only the
        tenant's counter moved."""
        # The tenant's ledger as last seen (this replica's previous write of
        # it, unless another write moved it since: then the txn fails and its
        # failure branch brings the fresh one), else read now.
        with self._ledger.writing([plan.tenant] if plan.charges else []):
            seen = self._ledger.seen(plan.tenant) if plan.charges else None
            fresh = False
            for _ in range(USAGE_RETRIES):
                if plan.charges and seen is None:
                    (request,) = await self._ledger.read(
                        [plan.tenant], extra=[plan.req_key or plan.key]
                    )
                    if plan.req_key and request is not None:
                        # a retry of a create that already happened: replay it,
                        # even if the tenant is at its quota by now
                        return Created(await self._replay(cls, request, fingerprint), True)
                    seen, fresh = self._ledger.seen(plan.tenant), True
                txn = Txn()
                try:
                    written = self._build(txn, plan, seen)
                except QuotaExceeded:
                    if fresh:
                        raise
                    seen = None  # judged on remembered usage: confirm with a fresh read
                    continue
                record_read = txn.read_on_failure(plan.key)
                request_read = txn.read_on_failure(plan.req_key) if plan.req_key else None
                claim_reads = [(claim, txn.read_on_failure(ckey)) for claim, ckey in plan.claims]
                state = StateReads(txn, self._keys, plan.tenant) if plan.tenant else None
                extra_reads: list[tuple[_Together, Read]] = []
                for x in extra:
                    txn.require_mod(x.key, x.revision)
                    txn.put(x.key, x.value)
                    extra_reads.append((x, txn.read_on_failure(x.key)))
                started = time.perf_counter()
                out = await txn.commit(self._kv)
                if out.succeeded:
                    self._ledger.wrote(written, out.revision)
                    # not offered to a ``follow_records`` cache: the next writer
                    # of a new record is usually a controller, so by the time
                    # this replica mutates it a cached copy would be stale and
                    # cost a failed txn (a raft write) instead of a read
                    etag = str(out.revision)
                    return Created(
                        etags.with_etag(plan.obj, etag),
                        False,
                        tuple(etags.with_etag(x.obj, etag) for x in extra),
                    )
                request = out.get(request_read) if request_read else None
                if request is not None:
                    return Created(await self._replay(cls, request, fingerprint), True)
                if out.get(record_read) is not None:
                    raise AlreadyExists(f"{plan.name} already exists")
                for claim, read in claim_reads:
                    if out.get(read) is not None:
                        raise claim_taken(claim)
                if state is not None:
                    seen = state.seen(out)
                    if seen[0] is None:
                        self._ledger.forget(plan.tenant)
                        raise NotFound(f"tenants/{plan.tenant} not found")
                    fresh = True
                    if plan.charges:
                        self._ledger.learn(plan.tenant, seen)
                for x, read in extra_reads:
                    stored = out.get(read)
                    if stored is None:
                        raise RecordGone(x.obj.name)
                    if stored.mod_revision != x.revision:
                        raise RecordChanged(x.obj.name, x.revision, stored.mod_revision)
                if plan.charges:
                    # another write of the tenant won the counter: come back when
                    # this replica's other writes of it have had their turn
                    await self._ledger.spread([plan.tenant], time.perf_counter() - started)
                    # and go with the newest counter known here (a local
                    # write that won meanwhile has put its own there)
                    seen = self._ledger.seen(plan.tenant) or seen
            raise Aborted(f"{plan.name}: too much contention on tenant usage; retry")

    # -- group commit -------------------------------------------------------------------

    async def _grouped(
        self, plan: _Plan[Any], extra: list[_Together], fingerprint: str, cls: type[R]
    ) -> Created[R]:
        """A charging create: alone when no create of the tenant is in flight
        on this replica, else in the tenant's next group (module docstring)."""
        fence = current_fence()
        key = (plan.tenant, id(fence))
        waiting = self._flights.get(key)
        if waiting is not None:
            loop = asyncio.get_running_loop()
            pending = _Pending(plan, extra, fingerprint, cls, loop.create_future())
            waiting.append(pending)
            created: Created[R] = await pending.future
            return created
        self._flights[key] = []
        try:
            return await self._one(plan, extra, fingerprint, cls)
        finally:
            self._next(key, fence)

    def _next(self, key: tuple[str, int], fence: Fence | None) -> None:
        """The in-flight txn of *key*'s tenant is done: send what waited for it."""
        waiting = [p for p in self._flights.pop(key, []) if not p.future.done()]
        if not waiting:
            return
        if self._closing:
            for p in waiting:
                p.future.cancel()
            return
        self._flights[key] = []
        task = asyncio.get_running_loop().create_task(
            self._send_group(key, fence, waiting), name=f"create-group {key[0]}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_group(
        self, key: tuple[str, int], fence: Fence | None, waiting: list[_Pending]
    ) -> None:
        group, rest = _disjoint(waiting)
        # what did not fit this group goes first in the next one
        self._flights[key] = rest + self._flights.get(key, [])
        try:
            with fenced(fence):  # the callers' fence, not the task's
                done = None
                if len(group) > 1:
                    try:
                        done = await self._together(key[0], group)
                    except Exception:  # etcd trouble: each create meets it alone
                        done = None
                if done is not None:
                    for pending, created in zip(group, done, strict=True):
                        if not pending.future.done():
                            pending.future.set_result(created)
                else:
                    for pending in group:
                        if not pending.future.done():
                            await self._settle(pending)
        except asyncio.CancelledError:  # aclose: nobody may wait forever
            for pending in (*waiting, *self._flights.get(key, [])):
                pending.future.cancel()
            raise
        finally:
            self._next(key, fence)

    async def _settle(self, p: _Pending) -> None:
        try:
            created = await self._one(p.plan, p.extra, p.fingerprint, p.cls)
        except Exception as exc:  # handed to the caller, as its own create would raise it
            if not p.future.done():
                p.future.set_exception(exc)
        else:
            if not p.future.done():
                p.future.set_result(created)

    async def _together(self, tenant: str, group: list[_Pending]) -> list[Created[Any]] | None:
        """*group*'s creates in ONE transaction charging their sum; None when
        it did not commit (then each goes alone and meets the reason)."""
        seen = self._ledger.seen(tenant)
        if seen is None:
            await self._ledger.read([tenant])
            seen = self._ledger.seen(tenant)
        txn = Txn()
        total = ZERO
        for p in group:
            self._build(txn, p.plan, None, charge=False)
            for x in p.extra:
                txn.require_mod(x.key, x.revision)
                txn.put(x.key, x.value)
            total = total + p.plan.delta
        try:
            assert seen is not None
            written = self._ledger.apply(txn, {tenant: total}, {tenant: seen})
        except (QuotaExceeded, NotFound):
            return None
        out = await txn.commit(self._kv)
        if not out.succeeded:
            return None
        self._ledger.wrote(written, out.revision)
        etag = str(out.revision)
        return [
            Created(
                etags.with_etag(p.plan.obj, etag),
                False,
                tuple(etags.with_etag(x.obj, etag) for x in p.extra),
            )
            for p in group
        ]

    async def aclose(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _build(
        self, txn: Txn, plan: _Plan[R], seen: Seen | None, *, charge: bool = True
    ) -> list[tuple[str, bytes, bytes]]:
        """The create's compares and writes; the usage counters it writes."""
        txn.require_absent(plan.key)
        txn.put(plan.key, plan.value)
        if plan.req_key is not None:
            txn.require_absent(plan.req_key)
            txn.put(plan.req_key, plan.req_value)
        for _, ckey in plan.claims:
            txn.require_absent(ckey)
            txn.put(ckey, plan.name.encode())
        if plan.charges:
            if not charge:
                return []
            assert seen is not None
            return self._ledger.apply(txn, {plan.tenant: plan.delta}, {plan.tenant: seen})
        if plan.tenant:
            txn.require_present(self._keys.tenant(plan.tenant))
        return []

    def _plan(self, obj: R, request_id: str, fingerprint: str) -> _Plan[R]:
        rn = parse_name(obj.name, collection=collection_of(type(obj)))
        tenant = rn.tenant if rn.collection != "tenants" else None
        if request_id:
            validate_request_id(request_id)
            if tenant is None:
                raise InvalidArgument("request_id is only supported on tenant resources")
        obj = stamp(obj, now=self._clock(), created=True)
        if request_id and getattr(obj, "request_id", None) == "":
            # remembered on the record so that deleting it frees the request id
            obj = dataclasses.replace(obj, request_id=request_id)  # type: ignore[type-var]
        req_key = self._keys.request(tenant, request_id) if tenant and request_id else None
        return _Plan(
            obj=obj,
            name=obj.name,
            key=self._keys.resource(rn),
            value=codec.encode(obj),
            tenant=tenant or "",
            delta=usage_of(obj),
            req_key=req_key,
            req_value=json.dumps({"name": obj.name, "fingerprint": fingerprint}).encode(),
            claims=tuple((c, self._keys.claim(c)) for c in claims_of(obj)),
        )

    async def _replay(self, cls: type[R], request: KV, fingerprint: str) -> R:
        data = json.loads(request.value)
        if fingerprint and data.get("fingerprint") and data["fingerprint"] != fingerprint:
            raise InvalidArgument("request_id was already used for a different request")
        name = data["name"]
        kv = await self._kv.get(self._keys.of_name(name, collection=collection_of(cls)))
        if kv is None:
            raise NotFound(f"{name} not found")
        return etags.decode(cls, kv)


def claim_taken(claim: Claim) -> ClaimTaken:
    """The error for a create that lost *claim* to another record."""
    if claim.kind == "address":
        return AddressInUse(claim.scope, claim.value)
    if claim.kind == "mac":
        return MacInUse(claim.value)
    if claim.kind == "vni":
        return VniInUse(claim.value)
    return ClaimTaken(claim.value)
