"""What every servicer shares: the dependencies and the caller's identity.

``ApiDeps`` is built once by ``control_plane.api.server`` and handed to each
servicer.  ``Placer`` is the one thing the API needs from the scheduler: place
a PENDING instance on a host now (one etcd transaction binds instance and
host) or raise ``NoCapacity``; the services layer (``control_plane.services``)
runs the workflows with it.  Servicers call ``tenant_of``/``operator``/
``agent_host`` first thing in every handler, validate and convert, then call
a service (or, for a plain read, the store); there is no unauthenticated RPC
apart from the standard health and reflection services.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bmaas_tls import peer_host
from control_plane.api.agent_hub import AgentHub
from control_plane.api.auth import Authenticator
from control_plane.api.errors import MissingResource
from control_plane.api.rpc import Context, metadata
from control_plane.domain.errors import NotFound, PermissionDenied
from control_plane.services import Services
from control_plane.services.instances import Placer
from control_plane.store import Store
from control_plane.store.records import R

CATALOG_TTL = 10.0

__all__ = ["ApiDeps", "Placer", "Servicer"]


@dataclass
class ApiDeps:
    store: Store
    auth: Authenticator
    placer: Placer
    hub: AgentHub
    heartbeat_interval: int = 5
    heartbeat_ttl: int = 15
    #: EnrollHost accepts the ``fake`` power driver (``--allow-fake-power``)
    allow_fake_power: bool = False
    #: agents must present a client certificate naming their host (``--tls-client-ca``)
    agent_certs: bool = False


class Servicer:
    """Base of the servicer mixins: holds ``deps`` and resolves callers."""

    def __init__(self, deps: ApiDeps) -> None:
        self.deps = deps
        self.store = deps.store
        self.services = Services.build(deps.store, deps.placer)
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
        """The host the calling agent's credential names; with
        ``agent_certs``, its client certificate must name the same host."""
        host_id = await self.deps.auth.agent(metadata(context))
        if self.deps.agent_certs:
            named = peer_host(context.auth_context())
            if named != host_id:
                shown = f"hosts/{named}" if named else "no host"
                raise PermissionDenied(
                    f"the client certificate names {shown}, the credential hosts/{host_id}"
                )
        return host_id

    async def ref(self, cls: type[R], name: str, field: str) -> R:
        """The record *name* a request field refers to; NotFound naming the field."""
        try:
            return await self.store.get(cls, name)
        except NotFound:
            raise MissingResource(name, field=field) from None
