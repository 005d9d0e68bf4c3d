"""A real control plane against a real etcd, and clients for it.

- ``ControlPlaneProcess``: ``python -m control_plane.main`` (what the
  ``bmaas-control-plane`` script runs) as a subprocess; its port is read from
  its ``listening on`` line.  ``kill()`` is SIGKILL (a crash: the etcd lease
  is *not* revoked), ``terminate()`` is SIGTERM (graceful: health
  NOT_SERVING, lease revoked).  ``detached=True`` runs it in its own session
  so that it outlives the launcher (``pid`` is what to record;
  ``tools.region.process.stop_process`` stops it later).
- ``InProcessControlPlane``: the same ``ApiServer`` (and optionally the
  ``ControllerManager``) inside the caller's event loop: fast to start,
  with short heartbeats and caches so that a region reacts quickly.
  Without the manager a lone ``HostController`` still runs (unless
  ``cleaning=False``): registered hosts become AVAILABLE once their wipe
  is reported (and maintenance moves hosts); instances never move on
  their own there.
- ``Clients``: generated stubs on one ``grpc.aio`` channel plus bearer
  metadata helpers.

Both control planes take ``OPERATOR_TOKEN`` as the operator's token unless
told another one (the region's operator bootstrap: there is no other way to
be the operator of a new region).  Both speak TLS with the server
certificate of *pki* (default: this process's ``default_pki()``), and
``Clients`` trusts that CA unless given another ``ClientTls``; plaintext
only with ``insecure=True``.  With ``agent_identity=True`` agents must
prove their host: a second port (``agent_port``) requires a client
certificate from *pki*'s CA naming the host (``Pki.issue_host``).
Neither accepts the ``fake`` power driver
unless told ``allow_fake_power=True`` (the tests and benchmarks that run
fake hosts say so; the demo never does).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from subprocess import Popen, TimeoutExpired
from types import TracebackType

from bmaas.v1 import agent_pb2_grpc, operator_pb2_grpc, tenant_pb2_grpc
from bmaas_tls import ClientTls, aio_channel
from control_plane.api.server import ApiConfig, ApiServer
from control_plane.controllers.config import ControllerConfig
from control_plane.controllers.host_controller import HostController
from control_plane.controllers.manager import ControllerManager
from control_plane.domain.storage import StorageConfig
from control_plane.store import Store
from tools.region.etcd import EtcdCluster, EtcdServer
from tools.region.pki import Pki, default_pki
from tools.region.process import StartError, log_tail, spawn

#: the operator token of a local region unless its launcher is given another
OPERATOR_TOKEN = "op-test-token-0123456789abcdef"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class Clients:
    """Stubs for the three services on one channel to ``127.0.0.1:port``
    (TLS trusting *tls*, default: ``default_pki()``'s CA)."""

    def __init__(
        self, port: int, *, operator_token: str = OPERATOR_TOKEN, tls: ClientTls | None = None
    ) -> None:
        self.port = port
        self.tls = tls if tls is not None else default_pki().client_tls()
        self.channel = aio_channel(f"127.0.0.1:{port}", self.tls)
        self.tenant = tenant_pb2_grpc.TenantServiceStub(self.channel)
        self.operator = operator_pb2_grpc.OperatorServiceStub(self.channel)
        self.agent = agent_pb2_grpc.AgentServiceStub(self.channel)
        self.op_md = bearer(operator_token)

    async def aclose(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class InProcessControlPlane:
    def __init__(
        self,
        etcd: EtcdServer,
        *,
        controllers: bool = False,
        operator_token: str = OPERATOR_TOKEN,
        auth_cache_ttl: float = 0.5,
        token_last_use_interval: float = 60.0,
        lease_ttl: int = 2,
        identity: str | None = None,
        desired_resync: float = 5.0,
        pki: Pki | None = None,
        insecure: bool = False,
        allow_fake_power: bool = False,
        cleaning: bool = True,
        agent_identity: bool = False,
        storage: StorageConfig | None = None,
    ) -> None:
        self.etcd = etcd
        self.pki = None if insecure else (pki or default_pki())
        self.allow_fake_power = allow_fake_power
        self.with_controllers = controllers
        self.cleaning = cleaning
        self.agent_identity = agent_identity
        self.host_controller: HostController | None = None
        #: the agents' port (client certificates required), with ``agent_identity``
        self.agent_port = 0
        self.lease_ttl = lease_ttl
        self.identity = identity
        self.desired_resync = desired_resync
        self.storage = storage or StorageConfig()
        self.operator_token = operator_token
        self.auth_cache_ttl = auth_cache_ttl
        self.token_last_use_interval = token_last_use_interval
        self.store: Store | None = None
        self.api: ApiServer | None = None
        self.manager: ControllerManager | None = None
        self.port = 0

    async def start(self) -> InProcessControlPlane:
        self.store = await Store.connect(self.etcd.host, self.etcd.port)
        self.api = ApiServer(
            self.store,
            ApiConfig(
                listen="127.0.0.1:0",
                operator_token=self.operator_token,
                heartbeat_interval=1,
                heartbeat_ttl=3,
                auth_cache_ttl=self.auth_cache_ttl,
                token_last_use_interval=self.token_last_use_interval,
                desired_resync=self.desired_resync,
                tls=(
                    self.pki.server_tls(client_ca=self.agent_identity)
                    if self.pki is not None
                    else None
                ),
                agent_listen="127.0.0.1:0" if self.agent_identity else "",
                insecure=self.pki is None,
                allow_fake_power=self.allow_fake_power,
                storage=self.storage,
            ),
        )
        self.port = await self.api.start()
        self.agent_port = self.api.agent_port
        if self.with_controllers:
            self.manager = ControllerManager(
                self.store,
                identity=self.identity,
                config=ControllerConfig(
                    lease_ttl=self.lease_ttl, resync_period=5.0, storage=self.storage
                ),
                scheduler=self.api.scheduler,  # as control_plane.main wires it
            )
            await self.manager.start()
        elif self.cleaning:
            self.host_controller = HostController(
                self.store, ControllerConfig(lease_ttl=self.lease_ttl, resync_period=5.0)
            )
            await self.host_controller.start()
        return self

    @property
    def client_tls(self) -> ClientTls:
        """What a client of this control plane trusts."""
        return self.pki.client_tls() if self.pki is not None else ClientTls(insecure=True)

    def clients(self) -> Clients:
        return Clients(self.port, operator_token=self.operator_token, tls=self.client_tls)

    async def stop(self) -> None:
        if self.host_controller is not None:
            await self.host_controller.aclose()
            self.host_controller = None
        if self.manager is not None:
            await self.manager.stop()
            self.manager = None
        if self.api is not None:
            await self.api.stop(0.5)
            self.api = None
        if self.store is not None:
            await self.store.aclose()
            self.store = None

    async def __aenter__(self) -> InProcessControlPlane:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class ControlPlaneProcess:
    """``python -m control_plane.main --etcd ETCD --listen 127.0.0.1:0``.

    *lease_ttl* (``BMAAS_LEASE_TTL``) and *grace* (``--grace``) default to
    short values so that failover and shutdown are quick; None leaves the
    control plane's own defaults.  TLS with *pki*'s server certificate
    (default ``default_pki()``), or ``--insecure``; ``--allow-fake-power``
    only when asked.  *extra_args* come last (a later ``--listen`` wins).
    The log (stdout and stderr) is a temp file removed by ``close()``, or
    *log* (the caller's, kept)."""

    def __init__(
        self,
        etcd: EtcdServer | EtcdCluster,
        *,
        lease_ttl: int | None = 2,
        grace: float | None = 1.0,
        controllers: bool = True,
        operator_token: str = OPERATOR_TOKEN,
        extra_args: tuple[str, ...] = (),
        log: Path | None = None,
        detached: bool = False,
        pki: Pki | None = None,
        insecure: bool = False,
        allow_fake_power: bool = False,
        agent_identity: bool = False,
    ) -> None:
        self.etcd = etcd
        self.pki = None if insecure else (pki or default_pki())
        self.allow_fake_power = allow_fake_power
        self.agent_identity = agent_identity
        #: the agents' port (client certificates required), with ``agent_identity``
        self.agent_port = 0
        self.lease_ttl = lease_ttl
        self.grace = grace
        self.controllers = controllers
        self.operator_token = operator_token
        self.extra_args = extra_args
        self.detached = detached
        self.port = 0
        self.proc: Popen[bytes] | None = None
        self._owns_log = log is None
        if log is None:
            fd, name = tempfile.mkstemp(prefix="bmaas-cp-", suffix=".log")
            os.close(fd)
            log = Path(name)
        self.log = log

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> ControlPlaneProcess:
        """Spawn and wait for its ``listening on`` line; killed if it does not come."""
        env = {"BMAAS_OPERATOR_TOKEN": self.operator_token}
        if self.lease_ttl is not None:
            env["BMAAS_LEASE_TTL"] = str(self.lease_ttl)
        args = [sys.executable, "-m", "control_plane.main", "--etcd", self.etcd.url,
                "--listen", "127.0.0.1:0"]  # fmt: skip
        if self.grace is not None:
            args += ["--grace", str(self.grace)]
        if self.pki is not None:
            args += self.pki.server_flags(agents=self.agent_identity)
        else:
            args.append("--insecure")
        if self.allow_fake_power:
            args.append("--allow-fake-power")
        args += self.extra_args
        if not self.controllers:
            args.append("--no-controllers")
        offset = self.log.stat().st_size if self.log.exists() else 0  # a restart appends
        self.proc = spawn(args, log=self.log, env=env, detached=self.detached)
        try:
            self.port = self._wait_listening(offset, timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_listening(self, offset: int, timeout: float) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.log.open("rb") as f:
                f.seek(offset)
                for line in f.read().decode(errors="replace").splitlines():
                    if line.startswith("agents listening on "):
                        self.agent_port = int(line.rsplit(":", 1)[1])
                    if line.startswith("listening on "):
                        return int(line.rsplit(":", 1)[1])
            if self.proc.poll() is not None:
                raise StartError(f"control plane exited {self.proc.returncode}: {self.tail()}")
            time.sleep(0.05)
        raise StartError(f"control plane did not start in {timeout}s: {self.tail()}")

    @property
    def client_tls(self) -> ClientTls:
        """What a client of this control plane trusts."""
        return self.pki.client_tls() if self.pki is not None else ClientTls(insecure=True)

    def tail(self, lines: int = 30) -> str:
        return log_tail(self.log, lines)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def terminate(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def close(self) -> None:
        """Kill it; remove the log if it is a temp file."""
        self.kill()
        if self._owns_log:
            self.log.unlink(missing_ok=True)

    def __enter__(self) -> ControlPlaneProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
