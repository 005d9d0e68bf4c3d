"""``bmaas-control-plane``: one control-plane replica.

``bmaas-control-plane --etcd URL[,URL...] --listen HOST:PORT
[--etcd-cacert FILE [--etcd-cert FILE --etcd-key FILE]]
[--config FILE] [--metrics HOST:PORT] [--no-controllers]``

``--etcd`` names every member of the etcd cluster (``http://a:2379,
http://b:2379,http://c:2379``; ``https://`` or ``--etcd-cacert`` for TLS):
one channel spreads calls over the members that are up and leaves a dead
one out (``control_plane.store.endpoints``).

Settings come from, lowest priority first: defaults, the TOML ``--config``
file (keys: ``etcd`` (a string or a list of URLs), ``etcd_cacert``,
``etcd_cert``, ``etcd_key``, ``operator_token``, ``etcd_root``,
``heartbeat_interval``, ``heartbeat_ttl``, ``lease_ttl``, ``metrics``,
``controllers``, ``compaction_interval``, ``compaction_retention``,
``etcd_quota_bytes``, and a ``[storage]`` table: ``backend`` ("file" or
"rbd"), ``pool``, ``ceph_conf``, ``client_id``, ``failover_grace``; with
"rbd" the pool is opened once at start and a missing pool or an
unreachable cluster is one line on stderr and exit status 1), environment variables (``BMAAS_ETCD``,
``BMAAS_ETCD_CACERT``, ``BMAAS_ETCD_CERT``, ``BMAAS_ETCD_KEY``,
``BMAAS_OPERATOR_TOKEN``, ``BMAAS_ETCD_ROOT``, ``BMAAS_LEASE_TTL``,
``BMAAS_METRICS``), then the command line.

Startup: connect to etcd and wait (up to ``--etcd-wait`` s) for a quorum
read to succeed -- an unreachable etcd or one that refuses our TLS is ONE
line on stderr and exit status 1, never a traceback -- then start the API
(``control_plane.api.server``), start the controllers
(``ControllerManager``: they run only while this replica holds the etcd
leader lease; every replica serves the API; they share the API's
scheduler, so a replica keeps ONE host cache), freeze what is alive then
out of the garbage collector's walks (``_tune_gc``), and wait.
SIGTERM/SIGINT starts a graceful shutdown: health goes NOT_SERVING, the
controllers resign leadership (revoking the lease so another replica takes
over at once), in-flight RPCs get ``--grace`` seconds, then the store
closes.  The listening port is printed as ``listening on HOST:PORT`` to
stdout once serving (tests and scripts wait for that line).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
import tomllib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control_plane import metrics
from control_plane.api.server import ApiConfig, ApiServer
from control_plane.controllers.config import ControllerConfig
from control_plane.controllers.manager import ControllerManager
from control_plane.domain.errors import BmaasError
from control_plane.domain.host import Host
from control_plane.domain.storage import StorageConfig, parse_storage
from control_plane.storage import CephAdmin, CephError
from control_plane.store import DEFAULT_ROOT, Store
from control_plane.store.endpoints import Endpoint, Tls, parse_endpoints

log = logging.getLogger("bmaas.control_plane")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    etcd: tuple[Endpoint, ...]
    listen: str
    operator_token: str | None
    etcd_root: str = DEFAULT_ROOT
    metrics: str = ""
    controllers: bool = True
    lease_ttl: int = 5
    heartbeat_interval: int = 5
    heartbeat_ttl: int = 15
    grace: float = 5.0
    etcd_tls: Tls | None = None
    etcd_wait: float = 10.0
    compaction_interval: float = 300.0
    compaction_retention: float = 600.0
    etcd_quota_bytes: int = 2 << 30
    storage: StorageConfig = field(default_factory=StorageConfig)

    @property
    def etcd_host(self) -> str:
        return self.etcd[0].host

    @property
    def etcd_port(self) -> int:
        return self.etcd[0].port


def parse_etcd(url: str | Sequence[str]) -> list[Endpoint]:
    try:
        return parse_endpoints(url)
    except BmaasError as exc:
        raise SystemExit(f"--etcd: {exc}") from None


def _tls(cacert: str | None, cert: str | None, key: str | None) -> Tls | None:
    if not (cacert or cert or key):
        return None
    if bool(cert) != bool(key):
        raise SystemExit("--etcd-cert and --etcd-key go together")
    return Tls(
        cacert=Path(cacert) if cacert else None,
        cert=Path(cert) if cert else None,
        key=Path(key) if key else None,
    )


def split_hostport(value: str, flag: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"{flag}: want HOST:PORT, got {value!r}")
    return host or "0.0.0.0", int(port)


def load_settings(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="bmaas-control-plane", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--etcd",
        default=None,
        help="etcd client URLs, comma-separated, e.g. http://10.0.0.1:2379,http://10.0.0.2:2379",
    )
    parser.add_argument("--etcd-cacert", default=None, help="CA bundle of the etcd members")
    parser.add_argument("--etcd-cert", default=None, help="client certificate for etcd")
    parser.add_argument("--etcd-key", default=None, help="key of the client certificate")
    parser.add_argument(
        "--etcd-wait", type=float, default=None, help="give up if etcd is unreachable (s)"
    )
    parser.add_argument("--listen", required=True, help="gRPC HOST:PORT (port 0 = pick one)")
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument("--metrics", default=None, help="serve /metrics on HOST:PORT")
    parser.add_argument("--no-controllers", action="store_true", help="API only")
    parser.add_argument("--grace", type=float, default=5.0, help="shutdown grace (s)")
    ns = parser.parse_args(argv)
    file: dict[str, Any] = {}
    if ns.config is not None:
        try:
            file = tomllib.loads(ns.config.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SystemExit(f"--config: {exc}") from exc
    env = os.environ
    etcd = ns.etcd or env.get("BMAAS_ETCD") or file.get("etcd")
    if not etcd:
        raise SystemExit("--etcd (or BMAAS_ETCD, or etcd in --config) is required")
    tls = _tls(
        ns.etcd_cacert or env.get("BMAAS_ETCD_CACERT") or file.get("etcd_cacert"),
        ns.etcd_cert or env.get("BMAAS_ETCD_CERT") or file.get("etcd_cert"),
        ns.etcd_key or env.get("BMAAS_ETCD_KEY") or file.get("etcd_key"),
    )
    return Settings(
        etcd=tuple(parse_etcd(etcd)),
        etcd_tls=tls,
        etcd_wait=ns.etcd_wait if ns.etcd_wait is not None else float(file.get("etcd_wait", 10)),
        listen=ns.listen,
        operator_token=env.get("BMAAS_OPERATOR_TOKEN") or file.get("operator_token") or None,
        etcd_root=env.get("BMAAS_ETCD_ROOT") or file.get("etcd_root") or DEFAULT_ROOT,
        metrics=ns.metrics or env.get("BMAAS_METRICS") or file.get("metrics", ""),
        controllers=not ns.no_controllers and bool(file.get("controllers", True)),
        lease_ttl=int(env.get("BMAAS_LEASE_TTL") or file.get("lease_ttl", 5)),
        heartbeat_interval=int(file.get("heartbeat_interval", 5)),
        heartbeat_ttl=int(file.get("heartbeat_ttl", 15)),
        compaction_interval=float(file.get("compaction_interval", 300.0)),
        compaction_retention=float(file.get("compaction_retention", 600.0)),
        etcd_quota_bytes=int(file.get("etcd_quota_bytes", 2 << 30)),
        grace=ns.grace,
        storage=_storage(file.get("storage")),
    )


def _storage(raw: Any) -> StorageConfig:
    try:
        return parse_storage(raw)
    except BmaasError as exc:
        raise SystemExit(f"--config: {exc}") from None


def check_storage(storage: StorageConfig) -> None:
    """Open the rbd back-end's pool once; ``SystemExit`` with one line if that fails."""
    if not storage.rbd:
        return
    try:
        CephAdmin(pool=storage.pool, conf=storage.ceph_conf, client_id=storage.client_id).check()
    except CephError as exc:
        raise SystemExit(f"bmaas-control-plane: [storage]: {exc}") from None


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if settings.metrics:
        mhost, mport = split_hostport(settings.metrics, "--metrics")
        metrics.serve(mhost, mport)
    if not settings.operator_token:
        log.warning("no operator token configured: OperatorService refuses every call")
    await asyncio.to_thread(check_storage, settings.storage)
    store = await connect_etcd(settings)
    metrics.track_etcd_round_trips(lambda: dict(store.stats.round_trips))
    api = ApiServer(
        store,
        ApiConfig(
            listen=settings.listen,
            operator_token=settings.operator_token,
            heartbeat_interval=settings.heartbeat_interval,
            heartbeat_ttl=settings.heartbeat_ttl,
            storage=settings.storage,
        ),
    )
    manager: ControllerManager | None = None
    census: asyncio.Task[None] | None = None
    try:
        port = await api.start()
        _tune_gc()
        if settings.controllers:
            # one host cache per replica: the controllers use the API's
            # scheduler (and its list + watch of hosts and heartbeats)
            manager = ControllerManager(
                store,
                config=ControllerConfig(
                    lease_ttl=settings.lease_ttl,
                    compaction_interval=settings.compaction_interval,
                    compaction_retention=settings.compaction_retention,
                    etcd_members=len(settings.etcd),
                    etcd_quota_bytes=settings.etcd_quota_bytes,
                    storage=settings.storage,
                ),
                scheduler=api.scheduler,
            )
            await manager.start()
            if settings.metrics:
                census = asyncio.create_task(_census(store, manager), name="census")
        host = settings.listen.rpartition(":")[0] or "0.0.0.0"
        print(f"listening on {host}:{port}", flush=True)
        await stop.wait()
        log.info("shutting down")
    finally:
        if census is not None:
            census.cancel()
        if manager is not None:
            await manager.stop()
        await api.stop(settings.grace)
        await store.aclose()


async def connect_etcd(settings: Settings) -> Store:
    """The store, once a quorum read succeeded; ``SystemExit`` with one line
    if that does not happen within ``settings.etcd_wait`` seconds."""
    where = ",".join(str(ep) for ep in settings.etcd)
    try:
        store = await Store.connect(
            endpoints=settings.etcd, tls=settings.etcd_tls, root=settings.etcd_root
        )
    except BmaasError as exc:
        raise SystemExit(f"bmaas-control-plane: etcd at {where}: {exc}") from None
    deadline = asyncio.get_running_loop().time() + settings.etcd_wait
    while True:
        try:
            await store.probe_quorum(timeout=2.0)
            return store
        except BmaasError as exc:
            if asyncio.get_running_loop().time() >= deadline:
                await store.aclose()
                raise SystemExit(
                    f"bmaas-control-plane: etcd unreachable at {where}: {exc}"
                ) from None
            await asyncio.sleep(0.5)


async def _census(store: Store, manager: ControllerManager) -> None:
    """Export the leader seat and the controllers' queues, and count hosts
    (from the shared host cache) and instances while this replica leads,
    every ``BMAAS_CENSUS_INTERVAL`` seconds (default 15)."""
    metrics.track_controllers(manager)

    def hosts() -> Collection[Host] | None:
        cache = manager.cache  # the shared host cache while leading, else None
        return cache.hosts() if manager.is_leader and cache is not None else None

    census = metrics.Census(
        store, hosts, interval=float(os.environ.get("BMAAS_CENSUS_INTERVAL") or 15)
    )
    metrics.track_census(census)
    await census.run()


#: allocations between young-generation collections (CPython's default is 700)
GC_YOUNG_THRESHOLD = 20_000


def _tune_gc() -> None:
    """Keep full garbage collections out of request latency.

    A replica holds many long-lived objects (every host in the host cache,
    recent records), and CPython's default thresholds make it walk all of
    them every few seconds under load -- a 30-80 ms stop of the event loop
    that shows up as request p99.  Records are acyclic (freed by reference
    counting), so collections find little: what is alive once the caches
    are loaded is frozen out of the collector's walks, and young
    collections run every ``GC_YOUNG_THRESHOLD`` allocations instead of
    700, which makes older-generation (and full) passes rarer too."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("BMAAS_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = load_settings(argv)
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
