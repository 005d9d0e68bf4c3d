"""The thin etcd layer: Range / Txn / Watch / Lease over aetcd's gRPC stubs.

Reads and transactions go straight to aetcd's ``kvstub`` with hand-built
``RangeRequest``/``TxnRequest`` messages: aetcd's helpers drop ``limit`` and
``revision`` and hide the response header, and the store needs all three
(paging at a fixed revision, and the txn revision that becomes the new etag).
Every call counts one round-trip in ``stats`` and translates foreign errors
at this edge (``raise translate(exc) from exc``).

The channel spans every etcd member (``control_plane.store.endpoints``).
``reachability`` follows whether etcd answers: it logs ONE line when calls
start failing and one when they succeed again (with the outage's length),
so callers log nothing per failed attempt.

**Fencing**: while a ``Fence`` is set in the current context (``fenced()``;
the controllers' leader sets it for its whole term, and every task created
inside inherits it), every ``txn`` also compares the leader key's
``create_revision``.  A deposed leader's txn therefore cannot commit; it
raises ``LeadershipLost`` and sets ``fence.lost``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass, field

import aetcd
import grpc
from aetcd import rpc, watcher

from control_plane import metrics
from control_plane.domain.errors import BmaasError, Unavailable
from control_plane.store.endpoints import Endpoint, Tls, open_channel
from control_plane.store.errors import FOREIGN_ERRORS, LeadershipLost, StoreFull, translate
from control_plane.store.keys import prefix_range_end
from control_plane.store.watch_hub import WatchHub

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KV:
    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int
    version: int
    lease: int


def _kv(raw: rpc.KeyValue) -> KV:
    return KV(raw.key, raw.value, raw.mod_revision, raw.create_revision, raw.version, raw.lease)


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    #: per request op: the KVs of a range op, else an empty list
    ranges: list[list[KV]]


@dataclass(frozen=True, slots=True)
class RawEvent:
    deleted: bool
    kv: KV


@dataclass(slots=True)
class Stats:
    """Round-trips to etcd by operation (Range, Txn, LeaseGrant, ...)."""

    round_trips: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def total(self) -> int:
        return sum(self.round_trips.values())


# -- compare / op builders (pure) --------------------------------------------------------


def cmp_mod(key: bytes, revision: int) -> rpc.Compare:
    """True iff *key*'s mod_revision equals *revision* (0 = the key is absent)."""
    return rpc.Compare(
        key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=revision
    )


def cmp_absent(key: bytes) -> rpc.Compare:
    return rpc.Compare(key=key, target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL, version=0)


def cmp_present(key: bytes) -> rpc.Compare:
    return rpc.Compare(key=key, target=rpc.Compare.VERSION, result=rpc.Compare.GREATER, version=0)


def cmp_created(key: bytes, revision: int) -> rpc.Compare:
    """True iff *key* exists and was created at *revision* (this incarnation)."""
    return rpc.Compare(
        key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=revision
    )


def cmp_lease(key: bytes, lease: int) -> rpc.Compare:
    """True iff *key* exists bound to *lease*."""
    return rpc.Compare(key=key, target=rpc.Compare.LEASE, result=rpc.Compare.EQUAL, lease=lease)


def cmp_value(key: bytes, value: bytes) -> rpc.Compare:
    return rpc.Compare(key=key, target=rpc.Compare.VALUE, result=rpc.Compare.EQUAL, value=value)


def op_put(key: bytes, value: bytes, *, lease: int = 0) -> rpc.RequestOp:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def op_delete(key: bytes) -> rpc.RequestOp:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))


def op_get(key: bytes, *, revision: int = 0) -> rpc.RequestOp:
    """Read *key* (as of *revision*, if not 0)."""
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key, revision=revision))


@dataclass(slots=True)
class Fence:
    """A leadership term: the leader key and the revision that created it."""

    key: bytes
    create_revision: int
    #: set when a fenced txn found the key gone or re-created (term over)
    lost: asyncio.Event = field(default_factory=asyncio.Event)


_fence: contextvars.ContextVar[Fence | None] = contextvars.ContextVar("etcd_fence", default=None)


def current_fence() -> Fence | None:
    return _fence.get()


@contextlib.contextmanager
def fenced(fence: Fence | None) -> Iterator[None]:
    """Compare *fence* in every txn of this context (and of tasks created in it)."""
    token = _fence.set(fence)
    try:
        yield
    finally:
        _fence.reset(token)


class Reachability:
    """Whether etcd answered the last call; logs each change once.

    ``reachable`` is None until the first call ends: a replica that cannot
    reach etcd at start-up says so itself (one line), not through here."""

    def __init__(self) -> None:
        self.reachable: bool | None = None
        self.since = time.monotonic()
        self.failures = 0

    def ok(self) -> None:
        if self.reachable is False:
            log.warning(
                "etcd reachable again after %.1f s (%d failed calls)",
                time.monotonic() - self.since,
                self.failures,
            )
        if not self.reachable:
            self.reachable, self.since, self.failures = True, time.monotonic(), 0

    def failed(self, exc: BaseException) -> None:
        if not isinstance(exc, Unavailable) or isinstance(exc, LeadershipLost):
            return
        self.failures += 1
        if self.reachable is not False:
            if self.reachable:
                log.warning("etcd unreachable: %s", exc)
            self.reachable, self.since = False, time.monotonic()


class _Client(aetcd.Client):  # type: ignore[misc]
    """aetcd's client on our channel: every member, capped backoff, TLS."""

    def __init__(self, endpoints: Sequence[Endpoint], tls: Tls | None) -> None:
        super().__init__(host=endpoints[0].host, port=endpoints[0].port)
        self._endpoints = list(endpoints)
        self._tls = tls

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        self.channel = await open_channel(self._endpoints, self._tls)
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=None, metadata=None)
        self._connected.set()


class EtcdKV:
    """One aetcd client plus round-trip accounting and error translation."""

    def __init__(self, client: aetcd.Client, *, rpc_timeout: float = 10.0) -> None:
        self.client = client
        self.timeout = rpc_timeout
        self.stats = Stats()
        self.reachability = Reachability()
        self._hub: WatchHub[KV] = WatchHub(self._resuming)

    @classmethod
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = 2379,
        *,
        endpoints: Sequence[Endpoint] = (),
        tls: Tls | None = None,
        rpc_timeout: float = 10.0,
    ) -> EtcdKV:
        """A client over *endpoints* (default: ``host:port`` alone)."""
        client = _Client(list(endpoints) or [Endpoint(host, port)], tls)
        try:
            await client.connect()
        except FOREIGN_ERRORS as exc:
            raise translate(exc) from exc
        return cls(client, rpc_timeout=rpc_timeout)

    def _failed(self, exc: BaseException) -> BmaasError:
        err = translate(exc)
        if not isinstance(err, StoreFull):  # etcd answered: reachable, only full
            self.reachability.failed(err)
        return err

    async def probe(self, key: bytes, *, timeout: float) -> int:
        """A linearizable one-key read: succeeds only through a quorum.
        The header revision; ``Unavailable`` when no quorum answers in time,
        ``StoreFull`` when etcd answers but refuses writes (NOSPACE alarm)."""
        self._count("Range")
        req = rpc.RangeRequest(key=key, count_only=True)
        try:
            resp = await self.client.kvstub.Range(req, timeout=timeout)
        except FOREIGN_ERRORS as exc:
            raise self._failed(exc) from exc
        self.reachability.ok()
        if "NOSPACE" in await self.alarms():
            raise StoreFull()
        return int(resp.header.revision)

    async def aclose(self) -> None:
        await self._hub.aclose()
        with contextlib.suppress(*FOREIGN_ERRORS):  # a broken channel: nothing to release
            await self.client.close()

    def _count(self, op: str) -> float:
        """Count one round-trip of *op*; the start time for ``_timed``."""
        self.stats.round_trips[op] += 1
        return time.perf_counter()

    @staticmethod
    def _timed(op: str, start: float) -> None:
        metrics.ETCD_DURATION.labels(op).observe(time.perf_counter() - start)

    async def range(
        self,
        start: bytes,
        end: bytes | None = None,
        *,
        limit: int = 0,
        revision: int = 0,
        keys_only: bool = False,
        serializable: bool = False,
        min_mod_revision: int = 0,
    ) -> tuple[list[KV], bool, int]:
        """``(kvs, more, header_revision)`` of ``[start, end)`` in key order."""
        req = rpc.RangeRequest(
            key=start,
            limit=limit,
            revision=revision,
            keys_only=keys_only,
            serializable=serializable,
            min_mod_revision=min_mod_revision,
        )
        if end is not None:
            req.range_end = end
        t0 = self._count("Range")
        try:
            resp = await self.client.kvstub.Range(req, timeout=self.timeout)
        except FOREIGN_ERRORS as exc:
            raise self._failed(exc) from exc
        finally:
            self._timed("Range", t0)
        self.reachability.ok()
        return [_kv(kv) for kv in resp.kvs], bool(resp.more), int(resp.header.revision)

    async def get(self, key: bytes, *, revision: int = 0) -> KV | None:
        kvs, _, _ = await self.range(key, revision=revision)
        return kvs[0] if kvs else None

    async def txn(
        self,
        compare: Sequence[rpc.Compare],
        success: Sequence[rpc.RequestOp],
        failure: Sequence[rpc.RequestOp] = (),
    ) -> TxnResult:
        fence = _fence.get()
        compare, failure = list(compare), list(failure)
        if fence is not None:
            compare.append(cmp_created(fence.key, fence.create_revision))
            failure.append(op_get(fence.key))
        req = rpc.TxnRequest(compare=compare, success=list(success), failure=failure)
        t0 = self._count("Txn")
        try:
            resp = await self.client.kvstub.Txn(req, timeout=self.timeout)
        except FOREIGN_ERRORS as exc:
            raise self._failed(exc) from exc
        finally:
            self._timed("Txn", t0)
        self.reachability.ok()
        ranges: list[list[KV]] = []
        for r in resp.responses:
            if r.WhichOneof("response") == "response_range":
                ranges.append([_kv(kv) for kv in r.response_range.kvs])
            else:
                ranges.append([])
        if fence is not None and not resp.succeeded:
            seat = ranges.pop()
            if not seat or seat[0].create_revision != fence.create_revision:
                fence.lost.set()
                raise LeadershipLost(fence.key.decode(errors="replace"), fence.create_revision)
        return TxnResult(bool(resp.succeeded), int(resp.header.revision), ranges)

    async def get_many(
        self, keys: Sequence[bytes], *, revision: int = 0
    ) -> tuple[list[KV | None], int]:
        """Several keys read at one revision (*revision*, if not 0) in one
        round-trip; and the current revision."""
        res = await self.txn([], [op_get(k, revision=revision) for k in keys])
        return [r[0] if r else None for r in res.ranges], res.revision

    async def delete(self, key: bytes) -> None:
        await self.txn([], [op_delete(key)])

    # -- leases ---------------------------------------------------------------------------

    async def lease_grant(self, ttl: int) -> int:
        t0 = self._count("LeaseGrant")
        try:
            resp = await self.client.leasestub.LeaseGrant(
                rpc.LeaseGrantRequest(TTL=ttl, ID=0), timeout=self.timeout
            )
        except FOREIGN_ERRORS as exc:
            raise self._failed(exc) from exc
        finally:
            self._timed("LeaseGrant", t0)
        return int(resp.ID)

    async def lease_keepalive(self, lease_id: int) -> int:
        """Refresh a lease; its new TTL in seconds, or 0 if it has already expired."""
        t0 = self._count("LeaseKeepAlive")
        try:
            reply = await asyncio.wait_for(self.client.refresh_lease(lease_id), self.timeout)
        except FOREIGN_ERRORS as exc:
            raise self._failed(exc) from exc
        finally:
            self._timed("LeaseKeepAlive", t0)
        return int(reply.TTL) if reply is not None else 0

    async def keep_alive(self, lease_id: int, *, every: float) -> AsyncGenerator[int, None]:
        """Keep *lease_id* alive on ONE long-lived LeaseKeepAlive stream: a
        request every *every* seconds, each reply's TTL yielded (0: the lease
        has expired, the caller grants another).  Each request is one round
        trip (counted as ``LeaseKeepAlive``); the stream is opened once, not
        per refresh as aetcd's ``refresh_lease`` does.  A broken stream raises
        the translated error (``Unavailable``); a reply not seen within
        ``rpc_timeout`` counts as broken."""

        async def requests() -> AsyncGenerator[rpc.LeaseKeepAliveRequest, None]:
            while True:
                self._count("LeaseKeepAlive")
                yield rpc.LeaseKeepAliveRequest(ID=lease_id)
                await asyncio.sleep(every)

        call = self.client.leasestub.LeaseKeepAlive(requests())
        try:
            replies = call.__aiter__()
            while True:
                try:
                    reply = await asyncio.wait_for(replies.__anext__(), every + self.timeout)
                except StopAsyncIteration:
                    raise Unavailable("etcd closed the LeaseKeepAlive stream") from None
                except FOREIGN_ERRORS as exc:
                    raise self._failed(exc) from exc
                self.reachability.ok()
                yield int(reply.TTL)
        finally:
            call.cancel()

    async def lease_revoke(self, lease_id: int) -> None:
        t0 = self._count("LeaseRevoke")
        try:
            await self.client.leasestub.LeaseRevoke(
                rpc.LeaseRevokeRequest(ID=lease_id), timeout=self.timeout
            )
        except FOREIGN_ERRORS as exc:
            if isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.NOT_FOUND:
                return  # already expired: revoking is idempotent
            raise translate(exc) from exc
        finally:
            self._timed("LeaseRevoke", t0)

    # -- maintenance ----------------------------------------------------------------------

    async def alarms(self) -> list[str]:
        """Names of the alarms raised on any member (``NOSPACE``, ``CORRUPT``)."""
        t0 = self._count("Alarm")
        req = rpc.AlarmRequest(action=rpc.AlarmRequest.GET, memberID=0, alarm=rpc.NONE)
        try:
            resp = await self.client.maintenancestub.Alarm(req, timeout=self.timeout)
        except FOREIGN_ERRORS as exc:
            raise self._failed(exc) from exc
        finally:
            self._timed("Alarm", t0)
        return sorted({rpc.AlarmType.Name(a.alarm) for a in resp.alarms if a.alarm != rpc.NONE})

    async def disarm(self, alarm: str) -> None:
        """Clear *alarm* on every member that raised it."""
        kind = rpc.AlarmType.Value(alarm)
        get = rpc.AlarmRequest(action=rpc.AlarmRequest.GET, memberID=0, alarm=rpc.NONE)
        t0 = self._count("Alarm")
        try:
            raised = await self.client.maintenancestub.Alarm(get, timeout=self.timeout)
            for member in raised.alarms:
                if member.alarm != kind:
                    continue
                self._count("Alarm")
                req = rpc.AlarmRequest(
                    action=rpc.AlarmRequest.DEACTIVATE, memberID=member.memberID, alarm=kind
                )
                await self.client.maintenancestub.Alarm(req, timeout=self.timeout)
        except FOREIGN_ERRORS as exc:
            raise self._failed(exc) from exc
        finally:
            self._timed("Alarm", t0)

    async def db_size(self) -> int:
        """Bytes of the answering member's database file."""
        t0 = self._count("Status")
        try:
            resp = await self.client.maintenancestub.Status(
                rpc.StatusRequest(), timeout=self.timeout
            )
        except FOREIGN_ERRORS as exc:
            raise self._failed(exc) from exc
        finally:
            self._timed("Status", t0)
        return int(resp.dbSize)

    async def compact(self, revision: int) -> None:
        """Drop the history before *revision* (watches older than it must relist)."""
        t0 = self._count("Compact")
        try:
            await self.client.kvstub.Compact(
                rpc.CompactionRequest(revision=revision, physical=True), timeout=self.timeout
            )
        except FOREIGN_ERRORS as exc:
            if "compacted" in str(translate(exc)):  # already compacted that far
                return
            raise self._failed(exc) from exc
        finally:
            self._timed("Compact", t0)

    async def defragment(self, *, timeout: float = 60.0) -> None:
        """Give the space freed by compaction back to the file system, on the
        member the channel picks (one call per member on a cluster)."""
        t0 = self._count("Defragment")
        try:
            await self.client.maintenancestub.Defragment(rpc.DefragmentRequest(), timeout=timeout)
        except FOREIGN_ERRORS as exc:
            raise self._failed(exc) from exc
        finally:
            self._timed("Defragment", t0)

    # -- watch ----------------------------------------------------------------------------

    async def watch_prefix(
        self, prefix: bytes, *, start_revision: int
    ) -> AsyncGenerator[RawEvent, None]:
        """Events under *prefix* from *start_revision* (inclusive) until cancelled.

        Errors (etcd down, compaction) propagate translated; the store's
        ``watch`` decides whether to resume.
        """
        self._count("Watch")
        try:
            watch = await self.client.watch(
                prefix, range_end=prefix_range_end(prefix), start_revision=start_revision
            )
        except FOREIGN_ERRORS as exc:
            raise translate(exc) from exc
        try:
            async for ev in watch:
                yield RawEvent(ev.kind == aetcd.EventKind.DELETE, _kv(ev.kv))
        except FOREIGN_ERRORS as exc:
            raise translate(exc) from exc
        finally:
            # best effort: the client may already be closed (aetcd then has no watcher)
            with contextlib.suppress(*FOREIGN_ERRORS, AttributeError):
                await watch.cancel()

    def watch_shared(
        self, prefix: bytes, *, start_revision: int
    ) -> AsyncGenerator[tuple[bool, KV], None]:
        """Like ``watch_resuming``, but every local watcher of *prefix* shares
        one etcd watch (``control_plane.store.watch_hub``)."""
        return self._hub.watch(prefix, start_revision=start_revision)

    def _resuming(
        self, prefix: bytes, start_revision: int
    ) -> AsyncGenerator[tuple[bool, KV], None]:
        return self.watch_resuming(prefix, start_revision=start_revision)

    async def watch_resuming(
        self, prefix: bytes, *, start_revision: int
    ) -> AsyncGenerator[tuple[bool, KV], None]:
        """``(deleted, kv)`` for every change under *prefix* from *start_revision*,
        forever.  When etcd is unreachable it retries (backoff up to 1 s) from
        the last delivered revision, skipping keys already delivered at that
        revision, so no event is lost or repeated.  ``RevisionCompacted``
        propagates (the caller must relist)."""
        next_rev = start_revision
        seen_at_rev: set[bytes] = set()
        delay = 0.05
        while True:
            try:
                async for raw in self.watch_prefix(prefix, start_revision=next_rev):
                    rev = raw.kv.mod_revision
                    if rev == next_rev and raw.kv.key in seen_at_rev:
                        continue
                    if rev != next_rev:
                        next_rev, seen_at_rev = rev, set()
                    seen_at_rev.add(raw.kv.key)
                    delay = 0.05
                    yield raw.deleted, raw.kv
            except Unavailable as exc:
                # the outage itself is logged once by ``reachability``
                self.reachability.failed(exc)
                log.debug("watch on %r interrupted (%s); resuming at %d", prefix, exc, next_rev)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
