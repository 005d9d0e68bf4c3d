"""``Store``: the one object the rest of the control plane holds.

It owns the etcd client and composes the concerns, each in its own module
(none of which imports this one):

- ``cas``: records and compare-and-swap -- get, update, mutate, delete;
- ``claims``: creates with idempotency records, claims and quota charges;
- ``quota``: the quota ledger (charged/released counters, as last seen);
- ``coalesce``: controllers' updates sharing transactions;
- ``paging``: pages, snapshots, changes since a revision;
- ``watching``: typed watch events over shared etcd watches;
- ``agent_reports``, ``consoles``, ``tenant_tokens``, ``liveness``,
  ``election``: the side records.

The methods below delegate; their docstrings say what a caller may rely on.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

from control_plane.domain.filtering import Filter
from control_plane.domain.tenant import QuotaUsage
from control_plane.store.agent_reports import AgentReports
from control_plane.store.cas import Records
from control_plane.store.claims import Created, Creator
from control_plane.store.coalesce import WriteCoalescer
from control_plane.store.consoles import Consoles
from control_plane.store.election import Elections
from control_plane.store.endpoints import Endpoint, Tls
from control_plane.store.keys import DEFAULT_ROOT, KeySpace
from control_plane.store.kv import KV, EtcdKV, Stats
from control_plane.store.liveness import Liveness
from control_plane.store.paging import Page, Pages
from control_plane.store.quota import QuotaLedger
from control_plane.store.records import R, collection_of
from control_plane.store.tenant_tokens import TenantTokens
from control_plane.store.watching import Watches, WatchEvent

__all__ = ["Created", "Page", "Store", "WatchEvent"]


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
        self.ledger = QuotaLedger(kv, self.keys)
        self.pages = Pages(kv, self.keys)
        self.records = Records(kv, self.keys, self.ledger, self.pages, clock)
        self.creator = Creator(kv, self.keys, self.ledger, clock)
        self.watches = Watches(kv, self.keys)
        self.coalescer = WriteCoalescer(self._update_many_positional)
        self.liveness = Liveness(kv, self.keys, clock=clock)
        self.elections = Elections(kv, self.keys)
        self.reports = AgentReports(kv, self.keys, self.pages, clock)
        self.consoles = Consoles(kv, self.keys)
        self.tenant_tokens = TenantTokens(kv, self.keys, clock)

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
        await self.coalescer.aclose()
        await self.creator.aclose()
        await self.records.aclose()
        await self.liveness.aclose()
        await self.consoles.aclose()
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

    # -- reads (``cas``, ``paging``, ``quota``) ---------------------------------------

    async def get(self, cls: type[R], name: str, *, revision: int = 0) -> R:
        """The record *name* of type *cls* (as of *revision*, if not 0);
        ``NotFound`` if absent."""
        record, _ = await self.records.get_at(cls, name, revision=revision)
        return record

    async def get_at(self, cls: type[R], name: str, *, revision: int = 0) -> tuple[R, int]:
        """``get``, and the revision it was read at: pass it as *revision*
        to further reads to see one snapshot."""
        return await self.records.get_at(cls, name, revision=revision)

    async def get_many(
        self, cls: type[R], names: Sequence[str], *, revision: int = 0
    ) -> builtins.list[R | None]:
        """The records *names* of type *cls* read at one revision (*revision*,
        if not 0) in one round-trip (None for each one that does not exist)."""
        return await self.records.get_many(cls, names, revision=revision)

    async def get_snapshot(
        self, wanted: Sequence[tuple[type[Any], str]], *, revision: int = 0
    ) -> tuple[builtins.list[Any], int]:
        """Records of different kinds, ``(cls, name)`` each, read at one
        revision in one round trip (None for each absent one); and the
        revision (pass it to further reads to stay in the snapshot)."""
        return await self.records.get_snapshot(wanted, revision=revision)

    async def addresses_in_use(self, subnet: str) -> set[str]:
        """The IP addresses claimed in *subnet* (an AIP subnet name): one
        keys-only range read."""
        return await self.records.addresses_in_use(subnet)

    async def get_usage(self, tenant: str) -> QuotaUsage:
        """What *tenant* holds now: charged minus released, read at one revision."""
        return await self.ledger.get_usage(tenant)

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
        return await self.pages.list(
            cls, parent=parent, page_size=page_size, page_token=page_token, filter=filter
        )

    async def list_all(
        self, cls: type[R], *, parent: str = "", revision: int = 0
    ) -> tuple[builtins.list[R], int]:
        """Every *cls* record below *parent* read at ONE revision (*revision*,
        if not 0), and that revision (watch from ``revision + 1`` to follow
        changes)."""
        return await self.pages.list_all(cls, parent=parent, revision=revision)

    async def changed_since(self, cls: type[R], revision: int) -> tuple[builtins.list[R], int]:
        """The *cls* records modified after *revision* (one linearizable read,
        filtered by etcd on ``mod_revision``) and the revision read at: what
        a watcher at *revision* has yet to see, deletions left out."""
        return await self.pages.changed_since(cls, revision)

    # -- create (``claims``) ----------------------------------------------------------

    async def create(self, obj: R, *, request_id: str = "", fingerprint: str = "") -> R:
        """Store a new record (see ``create_or_replay``, which also says
        whether *request_id* replayed an earlier create); the stored record."""
        created = await self.creator.create_or_replay(
            obj, request_id=request_id, fingerprint=fingerprint
        )
        return created.record

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
        require their tenant to exist (``NotFound``).  Claimed values
        (addresses, MACs, VNIs) are taken in the same transaction
        (``ClaimTaken`` and its kinds when another record holds one).

        *together* are existing records (not quota-accounted: a host, a
        placement group) updated in the SAME transaction, each compared on
        its etag: ``RecordChanged`` / ``RecordGone`` naming the first that
        moved, and then nothing was written.  A replayed ``request_id``
        writes none of them.  ``Created.together`` holds them as written.
        """
        return await self.creator.create_or_replay(
            obj, request_id=request_id, fingerprint=fingerprint, together=together
        )

    # -- update (``cas``, ``coalesce``) -----------------------------------------------

    async def update(self, obj: R) -> R:
        """Compare-and-swap *obj* on its ``etag``; ``Aborted`` if the stored
        record moved since it was read, ``NotFound`` if it is gone."""
        (out,) = await self.records.update_many([obj])
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
        of the stored records, and with the ledger's view of the counters
        such an update is ONE round trip.
        """
        return await self.records.update_many(objs, previous=previous)

    async def _update_many_positional(
        self, objs: builtins.list[Any], previous: builtins.list[Any]
    ) -> builtins.list[Any]:
        return await self.records.update_many(objs, previous=previous)

    async def update_batched(self, obj: R) -> R:
        """``update`` through ``update_many_batched``."""
        (out,) = await self.update_many_batched([obj])
        return out

    async def update_many_batched(
        self, objs: Sequence[R], *, previous: Iterable[object] = ()
    ) -> builtins.list[R]:
        """``update_many`` for writers that do not care whose txn carries
        the write (controllers): concurrent calls share transactions
        (``control_plane.store.coalesce``); each caller gets exactly what
        ``update_many`` would have given it."""
        keys = frozenset(self.keys.of_name(o.name, collection=collection_of(type(o))) for o in objs)
        result: builtins.list[R] = await self.coalescer.submit(
            builtins.list(objs), builtins.list(previous), keys
        )
        return result

    async def follow_records(self, cls: type[R]) -> None:
        """Keep recently seen *cls* records fresh from a watch, so ``mutate``
        of them usually needs no read (``control_plane.store.record_cache``)."""
        await self.records.follow(cls, await self.current_revision() + 1)

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
        return await self.records.mutate(cls, name, change, etag=etag, attempts=attempts)

    async def delete(self, cls: type[R], name: str, *, etag: str = "") -> None:
        """Delete *name* (compared on *etag* if given), its idempotency record,
        its claims (those it holds: a claim key holding another name, or none,
        is left alone) and release its quota usage, in one transaction."""
        await self.records.delete(cls, name, etag=etag)

    # -- watch (``watching``) ---------------------------------------------------------

    def watch(
        self, cls: type[R], *, start_revision: int, parent: str = ""
    ) -> AsyncGenerator[WatchEvent[R], None]:
        """Changes to *cls* records below *parent* from *start_revision*
        (inclusive), forever; resumes by itself across short etcd outages."""
        return self.watches.watch(cls, start_revision=start_revision, parent=parent)

    def watch_names(
        self, cls: type[R], *, start_revision: int
    ) -> AsyncGenerator[tuple[str, int], None]:
        """``(name, revision)`` of every change to a *cls* record, values not
        decoded (for watchers that only need to know *what* changed)."""
        return self.watches.watch_names(cls, start_revision=start_revision)

    def watch_raw(
        self, prefix: bytes, *, start_revision: int
    ) -> AsyncGenerator[tuple[bool, KV], None]:
        """``(deleted, kv)`` for every change under *prefix* (see ``EtcdKV.watch_resuming``)."""
        return self.watches.watch_raw(prefix, start_revision=start_revision)
