"""Launchers for a real control plane against a real etcd.

- ``ControlPlaneProcess``: ``python -m control_plane.main`` as a subprocess
  on a free loopback port (the port is read from its ``listening on`` line).
  ``kill()`` is SIGKILL (crash tests: the etcd lease is *not* revoked),
  ``terminate()`` is SIGTERM (graceful: health NOT_SERVING, lease revoked).
- ``InProcessControlPlane``: the same ``ApiServer`` (and optionally the
  ``ControllerManager``) inside the test's event loop - fast to start, used
  by the contract tests.
- ``Clients``: generated stubs on one ``grpc.aio`` channel plus bearer
  metadata helpers.
- ``etcd_dump``: every key under the control plane's root with value and
  ``mod_revision`` (the "nothing changed in etcd" oracle of the bad-input
  tests; lease-bound heartbeat keys are left out).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aetcd
import grpc

from bmaas.v1 import agent_pb2_grpc, operator_pb2_grpc, tenant_pb2_grpc
from control_plane.api.server import ApiConfig, ApiServer
from control_plane.controllers.config import ControllerConfig
from control_plane.controllers.manager import ControllerManager
from control_plane.store import Store
from tests.harness.etcd import EtcdServer

OPERATOR_TOKEN = "op-test-token-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class Clients:
    """Stubs for the three services on one channel to ``127.0.0.1:port``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.tenant = tenant_pb2_grpc.TenantServiceStub(self.channel)
        self.operator = operator_pb2_grpc.OperatorServiceStub(self.channel)
        self.agent = agent_pb2_grpc.AgentServiceStub(self.channel)
        self.op_md = bearer(OPERATOR_TOKEN)

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
        lease_ttl: int = 2,
        identity: str | None = None,
        desired_resync: float = 5.0,
    ) -> None:
        self.etcd = etcd
        self.with_controllers = controllers
        self.lease_ttl = lease_ttl
        self.identity = identity
        self.desired_resync = desired_resync
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
                operator_token=OPERATOR_TOKEN,
                heartbeat_interval=1,
                heartbeat_ttl=3,
                auth_cache_ttl=0.5,
                desired_resync=self.desired_resync,
            ),
        )
        self.port = await self.api.start()
        if self.with_controllers:
            self.manager = ControllerManager(
                self.store,
                identity=self.identity,
                config=ControllerConfig(lease_ttl=self.lease_ttl, resync_period=5.0),
                scheduler=self.api.scheduler,  # as control_plane.main wires it
            )
            await self.manager.start()
        return self

    async def stop(self) -> None:
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
    def __init__(
        self,
        etcd: EtcdServer,
        *,
        lease_ttl: int = 2,
        controllers: bool = True,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.etcd = etcd
        self.lease_ttl = lease_ttl
        self.controllers = controllers
        self.extra_args = extra_args
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="bmaas-cp-", suffix=".log")[1])

    def start(self, timeout: float = 20.0) -> ControlPlaneProcess:
        env = {
            **os.environ,
            "BMAAS_OPERATOR_TOKEN": OPERATOR_TOKEN,
            "BMAAS_LEASE_TTL": str(self.lease_ttl),
            "PYTHONUNBUFFERED": "1",
        }
        args = [
            sys.executable,
            "-m",
            "control_plane.main",
            "--etcd",
            self.etcd.url,
            "--listen",
            "127.0.0.1:0",
            "--grace",
            "1",
            *self.extra_args,
        ]
        if not self.controllers:
            args.append("--no-controllers")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=log, cwd=ROOT, env=env
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        os.set_blocking(self.proc.stdout.fileno(), False)
        buf = b""
        while time.monotonic() < deadline:
            chunk = self.proc.stdout.read()
            if chunk:
                buf += chunk
                for line in buf.decode(errors="replace").splitlines():
                    if line.startswith("listening on "):
                        self.port = int(line.rsplit(":", 1)[1])
                        return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"control plane exited {self.proc.returncode}: {self.tail()}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"control plane did not start in {timeout}s: {self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

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
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def close(self) -> None:
        self.kill()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.unlink(missing_ok=True)

    def __enter__(self) -> ControlPlaneProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class Entry:
    value: bytes
    mod_revision: int


async def etcd_dump(etcd: EtcdServer, prefix: bytes = b"/bmaas/") -> dict[bytes, Entry]:
    """Every key under *prefix* except lease-bound heartbeats and leader seats."""
    async with aetcd.Client(host=etcd.host, port=etcd.port) as client:
        result = await client.get_prefix(prefix)
    out: dict[bytes, Entry] = {}
    for kv in result:
        if b"/heartbeats/" in kv.key or b"/leases/" in kv.key:
            continue
        out[kv.key] = Entry(kv.value, kv.mod_revision)
    return out


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll the async *predicate* until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")
