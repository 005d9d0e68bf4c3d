"""``bmaas-control-plane``: one control-plane replica.

``bmaas-control-plane --etcd URL[,URL...] --listen HOST:PORT
(--tls-cert FILE --tls-key FILE [--tls-client-ca FILE --agent-listen HOST:PORT]
| --insecure)
[--etcd-cacert FILE [--etcd-cert FILE --etcd-key FILE]]
[--config FILE] [--metrics HOST:PORT] [--no-controllers] [--allow-fake-power]``

The gRPC port speaks TLS with ``--tls-cert``/``--tls-key``; plaintext only
with an explicit ``--insecure``.  Without either, or with files that cannot
be read, the replica refuses to start: one ``bmaas-control-plane: error:``
line on stderr, exit status 2.  ``--tls-client-ca`` with ``--agent-listen``
makes agents prove their host: the agent port requires a client
certificate from that CA, and Register/Connect refuse one that does not
name the credential's host (PERMISSION_DENIED).  ``--allow-fake-power``
lets EnrollHost accept the ``fake`` power driver (scale tests and
benchmarks only).

``--etcd`` names every member of the etcd cluster (``http://a:2379,
http://b:2379,http://c:2379``; ``https://`` or ``--etcd-cacert`` for TLS):
one channel spreads calls over the members that are up and leaves a dead
one out (``control_plane.store.endpoints``).

Settings come from, lowest priority first: defaults, the TOML ``--config``
file (keys: ``etcd`` (a string or a list of URLs), ``etcd_cacert``,
``etcd_cert``, ``etcd_key``, ``tls_cert``, ``tls_key``, ``tls_client_ca``,
``agent_listen``, ``insecure``, ``allow_fake_power``, ``operator_token``, ``etcd_root``,
``heartbeat_interval``, ``heartbeat_ttl``, ``lease_ttl``, ``metrics``,
``controllers``, ``compaction_interval``, ``compaction_retention``,
``etcd_quota_bytes``, and a ``[storage]`` table: ``backend`` ("file" or
"rbd"), ``pool``, ``ceph_conf``, ``client_id``, ``failover_grace``; with
"rbd" the pool is opened once at start and a missing pool or an
unreachable cluster is one line on stderr and exit status 1), environment variables (``BMAAS_ETCD``,
``BMAAS_ETCD_CACERT``, ``BMAAS_ETCD_CERT``, ``BMAAS_ETCD_KEY``,
``BMAAS_OPERATOR_TOKEN``, ``BMAAS_ETCD_ROOT``, ``BMAAS_LEASE_TTL``,
``BMAAS_METRICS``), then the command line.

Operator tokens: every line of ``--operator-token-file FILE`` (also
``BMAAS_OPERATOR_TOKEN_FILE``, config key ``operator_token_file``; re-read
when it changes or on SIGHUP, so tokens rotate without a restart:
``control_plane.operator_token_file``) and the single
``BMAAS_OPERATOR_TOKEN`` / ``operator_token`` are all accepted.  The config
key ``token_last_use_interval`` (default 60 s) bounds how often a tenant
token's last use is written.

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
stdout once serving (tests and scripts wait for that line), after
``agents listening on HOST:PORT`` when there is an agent port.
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
from typing import Any, NoReturn

from bmaas_tls import ServerTls, TlsError, server_credentials
from control_plane import metrics
from control_plane.api.server import ApiConfig, ApiServer
from control_plane.controllers.config import ControllerConfig
from control_plane.controllers.manager import ControllerManager
from control_plane.domain.errors import BmaasError
from control_plane.domain.host import Host
from control_plane.domain.storage import StorageConfig, parse_storage
from control_plane.operator_token_file import OperatorTokenFileError, read_tokens
from control_plane.operator_token_file import follow as follow_token_file
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
    operator_token_file: Path | None = None
    token_last_use_interval: float = 60.0
    etcd_tls: Tls | None = None
    etcd_wait: float = 10.0
    compaction_interval: float = 300.0
    compaction_retention: float = 600.0
    etcd_quota_bytes: int = 2 << 30
    #: the gRPC port's certificate; None only when ``insecure``
    tls: ServerTls | None = None
    insecure: bool = False
    allow_fake_power: bool = False
    #: the agents' port (client certificates required), with ``tls.client_ca``
    agent_listen: str = ""
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


def _refuse(message: str) -> NoReturn:
    """One line on stderr, exit status 2: the settings cannot be used."""
    print(f"bmaas-control-plane: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _api_tls(
    cert: str | None, key: str | None, client_ca: str | None, insecure: bool, agent_listen: str
) -> ServerTls | None:
    """The port's TLS, or None for an explicit ``--insecure``; refuses to
    start on anything else (no TLS and no --insecure, half a pair, a file
    that cannot be read)."""
    if bool(client_ca) != bool(agent_listen):
        _refuse("--tls-client-ca and --agent-listen go together (agents prove their host there)")
    if insecure:
        if cert or key or client_ca:
            _refuse("--insecure and --tls-cert/--tls-key/--tls-client-ca exclude each other")
        return None
    if not cert and not key:
        _refuse("no TLS: give --tls-cert FILE --tls-key FILE (or --insecure for plaintext)")
    if not cert or not key:
        _refuse("--tls-cert and --tls-key go together")
    tls = ServerTls(
        cert=Path(cert), key=Path(key), client_ca=Path(client_ca) if client_ca else None
    )
    try:
        server_credentials(tls, require_client_cert=bool(client_ca))  # every file, now
    except TlsError as exc:
        _refuse(str(exc))
    return tls


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        _refuse(f"--config: {name} must be true or false, got {value!r}")
    return value


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
    parser.add_argument("--tls-cert", default=None, help="the gRPC port's certificate (PEM)")
    parser.add_argument("--tls-key", default=None, help="its private key (PEM)")
    parser.add_argument(
        "--tls-client-ca", default=None, help="CA of the agents' client certificates (PEM)"
    )
    parser.add_argument(
        "--agent-listen",
        default=None,
        help="agents' HOST:PORT: client certificates from --tls-client-ca required",
    )
    parser.add_argument(
        "--insecure", action="store_true", default=None, help="plaintext gRPC (no TLS)"
    )
    parser.add_argument(
        "--allow-fake-power",
        action="store_true",
        default=None,
        help="EnrollHost accepts the fake power driver (scale tests, benchmarks)",
    )
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument("--metrics", default=None, help="serve /metrics on HOST:PORT")
    parser.add_argument("--no-controllers", action="store_true", help="API only")
    parser.add_argument("--grace", type=float, default=5.0, help="shutdown grace (s)")
    parser.add_argument(
        "--operator-token-file",
        default=None,
        help="operator tokens, one per line (mode 0600; re-read on change or SIGHUP)",
    )
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
    insecure = _flag(
        ns.insecure if ns.insecure is not None else file.get("insecure", False), "insecure"
    )
    api_tls = _api_tls(
        ns.tls_cert or file.get("tls_cert"),
        ns.tls_key or file.get("tls_key"),
        ns.tls_client_ca or file.get("tls_client_ca"),
        insecure,
        agent_listen := str(ns.agent_listen or file.get("agent_listen") or ""),
    )
    allow_fake = ns.allow_fake_power
    if allow_fake is None:
        allow_fake = _flag(file.get("allow_fake_power", False), "allow_fake_power")
    return Settings(
        etcd=tuple(parse_etcd(etcd)),
        etcd_tls=tls,
        tls=api_tls,
        agent_listen=agent_listen,
        insecure=insecure,
        allow_fake_power=allow_fake,
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
        operator_token_file=_path(
            ns.operator_token_file
            or env.get("BMAAS_OPERATOR_TOKEN_FILE")
            or file.get("operator_token_file")
        ),
        token_last_use_interval=float(file.get("token_last_use_interval", 60.0)),
        storage=_storage(file.get("storage")),
    )


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


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
    file_tokens: tuple[str, ...] = ()
    file_follower: asyncio.Task[None] | None = None
    token_file = settings.operator_token_file
    if token_file is not None:
        try:
            file_tokens, signature = read_tokens(token_file)
        except OperatorTokenFileError as exc:
            raise SystemExit(f"bmaas-control-plane: --operator-token-file: {exc}") from None
    if not settings.operator_token and not file_tokens:
        log.warning("no operator token configured: OperatorService refuses every call")
    if settings.insecure:
        log.warning(
            "--insecure: the gRPC port speaks plaintext (tokens cross the network in clear)"
        )
    if settings.allow_fake_power:
        log.warning("--allow-fake-power: EnrollHost accepts simulated (fake) servers")
    await asyncio.to_thread(check_storage, settings.storage)
    store = await connect_etcd(settings)
    metrics.track_etcd_round_trips(lambda: dict(store.stats.round_trips))
    api = ApiServer(
        store,
        ApiConfig(
            listen=settings.listen,
            operator_token=settings.operator_token,
            operator_tokens=file_tokens,
            token_last_use_interval=settings.token_last_use_interval,
            heartbeat_interval=settings.heartbeat_interval,
            heartbeat_ttl=settings.heartbeat_ttl,
            tls=settings.tls,
            agent_listen=settings.agent_listen,
            insecure=settings.insecure,
            allow_fake_power=settings.allow_fake_power,
            storage=settings.storage,
        ),
    )
    if token_file is not None:
        reread = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, reread.set)
        single = settings.operator_token or ""
        file_follower = asyncio.create_task(
            follow_token_file(
                token_file,
                lambda tokens: api.auth.set_operator_tokens((single, *tokens)),
                signature=signature,
                reread=reread,
            ),
            name="operator-token-file",
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
        if api.agent_port:
            ahost = settings.agent_listen.rpartition(":")[0] or "0.0.0.0"
            print(f"agents listening on {ahost}:{api.agent_port}", flush=True)
        print(f"listening on {host}:{port}", flush=True)
        await stop.wait()
        log.info("shutting down")
    finally:
        if census is not None:
            census.cancel()
        if file_follower is not None:
            file_follower.cancel()
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
