"""Assembling one control-plane replica's API: store, scheduler, servicers, gRPC.

``ApiServer.start()`` connects to etcd (``Store.connect``), fills the
scheduler's ``HostCache`` (list + watch), builds the servicers around one
``ApiDeps`` and starts a ``grpc.aio`` server with the three bmaas services,
the standard health service (``grpc.health.v1``, SERVING once started,
NOT_SERVING during shutdown) and server reflection.  ``stop(grace)`` flips
health to NOT_SERVING, lets in-flight calls finish for *grace* seconds
(agent streams are cancelled at the end of it), then closes the cache and
the store.  Replicas are active-active: every write is a CAS in etcd, so
any number can serve the API at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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
from control_plane.api.agent import AgentServicer
from control_plane.api.agent_hub import AgentHub
from control_plane.api.auth import Authenticator
from control_plane.api.base import ApiDeps
from control_plane.api.operator import OperatorServicer
from control_plane.api.tenant import TenantServicer
from control_plane.domain.compute import Instance
from control_plane.domain.errors import InvalidArgument, NotFound
from control_plane.domain.host import Host
from control_plane.scheduler import HostCache, Scheduler
from control_plane.store import Created, Store

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    tenant_pb2.DESCRIPTOR.services_by_name["TenantService"].full_name,
    operator_pb2.DESCRIPTOR.services_by_name["OperatorService"].full_name,
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    listen: str = "127.0.0.1:7443"
    operator_token: str | None = None
    heartbeat_interval: int = 5
    heartbeat_ttl: int = 15
    auth_cache_ttl: float = 5.0
    desired_resync: float = 10.0


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
            operator_token=config.operator_token,
            tenant_tokens=self._tenant_token,
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
        )
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def _tenant_token(self, token_id: str) -> tuple[str, str] | None:
        token = await self.store.tenant_tokens.lookup(token_id)
        return (token.tenant, token.sha256) if token is not None else None

    async def _host_credential(self, host_id: str) -> str | None:
        try:
            host = await self.store.get(Host, f"hosts/{host_id}")
        except (NotFound, InvalidArgument):
            return None
        return host.agent_credential_hash or None

    async def start(self) -> int:
        """Serve on ``config.listen``; returns the bound port (``:0`` picks one)."""
        await self.cache.start()
        await self.deps.hub.start()
        # instance actions (terminate, stop...) start from the watched version
        await self.store.follow_records(Instance)
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
        agent_pb2_grpc.add_AgentServiceServicer_to_server(agent, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self.port = server.add_insecure_port(self.config.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        await server.start()
        self.server = server
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("API serving on port %d", self.port)
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None
        await self.deps.hub.aclose()
        await self.cache.aclose()
