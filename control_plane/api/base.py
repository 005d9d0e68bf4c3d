"""What every servicer shares: the dependencies and the caller's identity.

``ApiDeps`` is built once by ``control_plane.api.server`` and handed to each
servicer.  ``Placer`` is the one thing the API needs from the scheduler: place
a PENDING instance on a host now (one etcd transaction binds instance and
host) or raise ``NoCapacity``.  Servicers call ``tenant_of``/``operator``/
``agent_host`` first thing in every handler; there is no unauthenticated RPC
apart from the standard health and reflection services.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from control_plane.api.agent_hub import AgentHub
from control_plane.api.auth import Authenticator
from control_plane.api.errors import MissingResource
from control_plane.api.rpc import Context, metadata
from control_plane.domain.compute import Instance
from control_plane.domain.errors import NotFound
from control_plane.store import Created, RecordChanged, Store
from control_plane.store.records import R

CATALOG_TTL = 10.0
#: tries of a read-check-write whose records a controller changed meanwhile
RACE_ATTEMPTS = 8
T = TypeVar("T")


class Placer(Protocol):
    async def place(self, instance: Instance) -> Instance:
        """Bind *instance* (PENDING) to a host; the SCHEDULED instance, or ``NoCapacity``."""
        ...

    async def create_placed(
        self, instance: Instance, *, request_id: str, fingerprint: str
    ) -> Created[Instance]:
        """Create the new *instance* bound to a host in one transaction
        (``Store.create_or_replay`` semantics); ``NoCapacity`` writes nothing."""
        ...


@dataclass
class ApiDeps:
    store: Store
    auth: Authenticator
    placer: Placer
    hub: AgentHub
    heartbeat_interval: int = 5
    heartbeat_ttl: int = 15


class Servicer:
    """Base of the servicer mixins: holds ``deps`` and resolves callers."""

    def __init__(self, deps: ApiDeps) -> None:
        self.deps = deps
        self.store = deps.store
        self._catalog: dict[str, tuple[float, object]] = {}

    async def catalog_ref(self, cls: type[R], name: str, field: str) -> R:
        """Like ``ref`` for global catalogue records (instance types, images),
        which are never changed in place: a hit within ``CATALOG_TTL`` seconds
        costs no etcd round trip."""
        now = time.monotonic()
        hit = self._catalog.get(name)
        if hit is not None and hit[0] > now and isinstance(hit[1], cls):
            return hit[1]
        obj = await self.ref(cls, name, field)
        if len(self._catalog) > 10_000:
            self._catalog.clear()
        self._catalog[name] = (now + CATALOG_TTL, obj)
        return obj

    async def tenant_of(self, context: Context) -> str:
        return await self.deps.auth.tenant(metadata(context))

    def operator(self, context: Context) -> None:
        self.deps.auth.operator(metadata(context))

    async def agent_host(self, context: Context) -> str:
        return await self.deps.auth.agent(metadata(context))

    async def retry_races(self, attempt: Callable[[], Awaitable[T]], *, guarded: str = "") -> T:
        """Run *attempt* (read, check, write in one transaction) again when a
        record it read changed before its transaction, e.g. a controller moved
        the instance on: the caller asked for no particular version of it.  A
        change to *guarded*, the record the caller gave an etag for, is the
        caller's conflict and surfaces (ABORTED)."""
        for _ in range(RACE_ATTEMPTS - 1):
            try:
                return await attempt()
            except RecordChanged as exc:
                if guarded and exc.name == guarded:
                    raise
        return await attempt()

    async def ref(self, cls: type[R], name: str, field: str) -> R:
        """The record *name* a request field refers to; NotFound naming the field."""
        try:
            return await self.store.get(cls, name)
        except NotFound:
            raise MissingResource(name, field=field) from None
