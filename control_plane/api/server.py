"""Assembling one control-plane replica's API: store, scheduler, servicers, gRPC.

``ApiServer.start()`` connects to etcd (``Store.connect``), fills the
scheduler's ``HostCache`` (list + watch), starts watching the tenant-token
records (``token_upkeep``: a revoked token leaves the auth cache at once;
last uses are written once a minute), builds the servicers around one
``ApiDeps`` and starts a ``grpc.aio`` server with the three bmaas services,
the standard health service (``grpc.health.v1``) and server reflection.
The port speaks TLS (``ApiConfig.tls``, credentials from ``bmaas_tls``);
plaintext only when ``ApiConfig.insecure`` says so.  With a client CA
(``tls.client_ca``) the same services are also served on
``agent_listen``, whose handshake requires a client certificate from that
CA, and agents must present one naming their host (on the API port no
certificate is asked for, so an agent there is refused).

Health tells the truth about etcd: every ``quorum_check_interval`` seconds
the replica makes a linearizable read (``Store.probe_quorum``, which only
a quorum of etcd members can answer) with a short timeout, and asks for
etcd's alarms (a NOSPACE alarm means etcd answers reads but refuses every
write: the replica is not ready either, and the log line says why).  The overall
service ``""`` and the three bmaas services are the **readiness** signal:
SERVING while those reads succeed, NOT_SERVING from the first one that
fails until one succeeds again, and NOT_SERVING for good once shutdown
starts.  The service ``liveness`` is the **liveness** signal: SERVING as
long as the process answers at all (a replica cut off from etcd is not
broken and must not be restarted for it).  See docs/operations.md.  ``stop(grace)`` flips
health to NOT_SERVING, lets in-flight calls finish for *grace* seconds
(agent streams are cancelled at the end of it), then closes the cache and
the store.  Replicas are active-active: every write is a CAS in etcd, so
any number can serve the API at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from bmaas.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    operator_pb2,
    operator_pb2_grpc,
    tenant_pb2,
    tenant_pb2_grpc,
)
from bmaas_tls import ServerTls, server_credentials
from control_plane.api.agent import AgentServicer
from control_plane.api.agent_hub import AgentHub
from control_plane.api.auth import Authenticator
from control_plane.api.base import ApiDeps
from control_plane.api.operator import OperatorServicer
from control_plane.api.tenant import TenantServicer
from control_plane.api.token_upkeep import flush_uses, follow_tokens
from control_plane.domain.compute import Instance
from control_plane.domain.errors import BmaasError, InvalidArgument, NotFound
from control_plane.domain.host import Host
from control_plane.domain.storage import StorageConfig
from control_plane.scheduler import HostCache, Scheduler
from control_plane.store import Created, Store

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    tenant_pb2.DESCRIPTOR.services_by_name["TenantService"].full_name,
    operator_pb2.DESCRIPTOR.services_by_name["OperatorService"].full_name,
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: the health service a liveness probe asks (SERVING while the process answers)
LIVENESS_SERVICE = "liveness"
READINESS_SERVICES = ("", *SERVICE_NAMES)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    listen: str = "127.0.0.1:7443"
    operator_token: str | None = None
    #: more operator tokens, all accepted (``--operator-token-file``)
    operator_tokens: tuple[str, ...] = ()
    #: seconds between last-use writes of one tenant token
    token_last_use_interval: float = 60.0
    heartbeat_interval: int = 5
    heartbeat_ttl: int = 15
    auth_cache_ttl: float = 5.0
    #: safety net only: the agent hub wakes a stream on every change of the
    #: records its desired state is computed from (10,000 streams at 10 s
    #: cost about 1,000 recomputations a second, see docs/benchmarks.md)
    desired_resync: float = 60.0
    #: seconds between quorum reads (readiness); each may take as long
    quorum_check_interval: float = 1.0
    #: the port's certificate and key; None only with ``insecure``
    tls: ServerTls | None = None
    #: plaintext (an operator's explicit choice: ``--insecure``)
    insecure: bool = False
    #: EnrollHost accepts the ``fake`` power driver (scale tests, benchmarks)
    allow_fake_power: bool = False
    #: the agents' port (client certificates required); needs ``tls.client_ca``
    agent_listen: str = ""
    #: the region's storage back-end (``[storage]``): RBD names in desired states
    storage: StorageConfig = field(default_factory=StorageConfig)


class SchedulerPlacer:
    """``Placer`` over the scheduler package: returns the placed instance."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    async def place(self, instance: Instance) -> Instance:
        return (await self.scheduler.place(instance)).instance

    async def create_placed(
        self, instance: Instance, *, request_id: str, fingerprint: str
    ) -> Created[Instance]:
        return await self.scheduler.create_placed(
            instance, request_id=request_id, fingerprint=fingerprint
        )


class ApiServer:
    def __init__(self, store: Store, config: ApiConfig) -> None:
        self.store = store
        self.config = config
        self.cache = HostCache(store)
        self.scheduler = Scheduler(store, self.cache)
        self.auth = Authenticator(
            operator_tokens=(config.operator_token or "", *config.operator_tokens),
            tenant_tokens=self.store.tenant_tokens.lookup,
            host_credentials=self._host_credential,
            cache_ttl=config.auth_cache_ttl,
        )
        self.deps = ApiDeps(
            store=store,
            auth=self.auth,
            placer=SchedulerPlacer(self.scheduler),
            hub=AgentHub(store),
            heartbeat_interval=config.heartbeat_interval,
            heartbeat_ttl=config.heartbeat_ttl,
            allow_fake_power=config.allow_fake_power,
            agent_certs=config.tls is not None and config.tls.client_ca is not None,
        )
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port = 0
        #: the agents' port (``config.agent_listen``), 0 without one
        self.agent_port = 0
        #: readiness: True while the last quorum read succeeded
        self.ready = False
        self._quorum_task: asyncio.Task[None] | None = None
        self._token_tasks: list[asyncio.Task[None]] = []

    async def _host_credential(self, host_id: str) -> str | None:
        try:
            host = await self.store.get(Host, f"hosts/{host_id}")
        except (NotFound, InvalidArgument):
            return None
        return host.agent_credential_hash or None

    async def start(self) -> int:
        """Serve on ``config.listen``; returns the bound port (``:0`` picks one).

        ``bmaas_tls.TlsFileError`` if a TLS file cannot be read (before
        anything starts)."""
        tls = self.config.tls
        if tls is None and not self.config.insecure:
            raise ValueError("ApiConfig: give tls, or insecure=True for plaintext")
        if (tls is not None and tls.client_ca is not None) != bool(self.config.agent_listen):
            raise ValueError("ApiConfig: agent_listen and tls.client_ca go together")
        creds = server_credentials(tls) if tls is not None else None
        agent_creds = (
            server_credentials(tls, require_client_cert=True)
            if tls is not None and self.config.agent_listen
            else None
        )
        await self.cache.start()
        await self.deps.hub.start()
        # instance actions (terminate, stop...) start from the watched version
        await self.store.follow_records(Instance)
        await self._start_token_upkeep()
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ]
        )
        tenant_pb2_grpc.add_TenantServiceServicer_to_server(TenantServicer(self.deps), server)
        operator_pb2_grpc.add_OperatorServiceServicer_to_server(OperatorServicer(self.deps), server)
        agent = AgentServicer(self.deps)
        agent.desired_resync = self.config.desired_resync
        agent.storage = self.config.storage
        agent_pb2_grpc.add_AgentServiceServicer_to_server(agent, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        if creds is not None:
            self.port = server.add_secure_port(self.config.listen, creds)
        else:
            self.port = server.add_insecure_port(self.config.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        if agent_creds is not None:
            self.agent_port = server.add_secure_port(self.config.agent_listen, agent_creds)
            if self.agent_port == 0:
                raise OSError(f"cannot listen on {self.config.agent_listen}")
        await server.start()
        self.server = server
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self._set_ready(True)
        self._quorum_task = asyncio.create_task(self._watch_quorum(), name="api-quorum-check")
        log.info("API serving on port %d", self.port)
        return self.port

    async def _start_token_upkeep(self) -> None:
        watching = asyncio.Event()
        self._token_tasks = [
            asyncio.create_task(
                follow_tokens(self.store, self.auth, watching), name="tenant-token-watch"
            ),
            asyncio.create_task(
                flush_uses(self.store, self.auth, self.config.token_last_use_interval),
                name="tenant-token-last-use",
            ),
        ]
        await watching.wait()

    async def _set_ready(self, ready: bool) -> None:
        if ready == self.ready:
            return
        self.ready = ready
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in READINESS_SERVICES:
            await self.health.set(name, status)

    async def _watch_quorum(self) -> None:
        interval = self.config.quorum_check_interval
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.store.probe_quorum(timeout=interval)
            except BmaasError as exc:
                if self.ready:
                    log.warning("etcd unusable (%s): health NOT_SERVING", exc)
                await self._set_ready(False)
            else:
                if not self.ready:
                    log.warning("etcd usable again: health SERVING")
                await self._set_ready(True)
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    async def stop(self, grace: float = 5.0) -> None:
        if self._quorum_task is not None:
            self._quorum_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._quorum_task
            self._quorum_task = None
        for task in self._token_tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._token_tasks = []
        self.ready = False
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None
        await self.deps.hub.aclose()
        await self.cache.aclose()
