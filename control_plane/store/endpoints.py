"""Where etcd is and how to reach it: endpoint lists, TLS, the gRPC channel.

``parse_endpoints("http://a:2379,https://b:2379")`` turns the ``--etcd``
value (one URL or a comma list; scheme optional, port 2379 by default) into
``Endpoint``s; a malformed list raises ``InvalidArgument`` with one line
saying which entry is wrong.

``open_channel(endpoints, tls)`` builds ONE ``grpc.aio`` channel over every
member: the target is ``ipv4:A:p,B:q,...`` (host names are resolved once,
at connect time) with the ``round_robin`` policy, so RPCs are spread over
the members that are up and a dead member's sub-channel simply leaves the
rotation (its connection is refused or reset; round-robin only picks READY
sub-channels).  Reconnect backoff is capped at ``MAX_RECONNECT_BACKOFF_MS``
(gRPC's default grows to 120 s, which kept a replica away from a restarted
member for a minute), and idempotent calls (Range, LeaseGrant, Status) are
retried by gRPC on UNAVAILABLE, which lands them on another member.  Txns
are not retried here: a txn whose reply was lost may have committed, and
its caller's compare-and-swap decides what a second attempt means.

With ``tls`` the channel is a secure one (CA bundle, optional client
certificate and key); the server name checked is the first endpoint's host
as written in ``--etcd``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc

from control_plane.domain.errors import InvalidArgument

DEFAULT_PORT = 2379
INITIAL_RECONNECT_BACKOFF_MS = 100
MAX_RECONNECT_BACKOFF_MS = 1000


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    secure: bool = False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.secure else 'http'}://{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Tls:
    """Client-side TLS for etcd: the CA that signed the members' certificates
    and, for client-certificate authentication, a certificate and its key."""

    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise InvalidArgument("etcd TLS: a client certificate needs its key (and vice versa)")
        try:
            ca = self.cacert.read_bytes() if self.cacert else None
            cert = self.cert.read_bytes() if self.cert else None
            key = self.key.read_bytes() if self.key else None
        except OSError as exc:
            raise InvalidArgument(f"etcd TLS: cannot read {exc.filename}: {exc.strerror}") from exc
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )


def parse_endpoints(spec: str | Sequence[str]) -> list[Endpoint]:
    """``--etcd`` -> endpoints; raises ``InvalidArgument`` (one line)."""
    items = spec.split(",") if isinstance(spec, str) else [p for s in spec for p in s.split(",")]
    out: list[Endpoint] = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        url = item if "://" in item else f"http://{item}"
        try:
            parts = urlsplit(url)
            port = parts.port or DEFAULT_PORT
        except ValueError as exc:
            raise InvalidArgument(f"etcd endpoint {item!r}: {exc}") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument(f"etcd endpoint {item!r}: want http(s)://HOST:PORT")
        if parts.path not in ("", "/"):
            raise InvalidArgument(f"etcd endpoint {item!r}: unexpected path {parts.path!r}")
        out.append(Endpoint(parts.hostname, port, parts.scheme == "https"))
    if not out:
        raise InvalidArgument("no etcd endpoint given (want http://HOST:PORT[,...])")
    return out


def channel_options(*, server_name: str | None = None) -> list[tuple[str, object]]:
    methods = [
        {"service": "etcdserverpb.KV", "method": "Range"},
        {"service": "etcdserverpb.Lease", "method": "LeaseGrant"},
        {"service": "etcdserverpb.Maintenance", "method": "Status"},
    ]
    config = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": methods,
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
    opts: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 16 * 1024 * 1024),
        ("grpc.service_config", json.dumps(config)),
        ("grpc.enable_retries", 1),
        ("grpc.initial_reconnect_backoff_ms", INITIAL_RECONNECT_BACKOFF_MS),
        ("grpc.min_reconnect_backoff_ms", INITIAL_RECONNECT_BACKOFF_MS),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        # a member that vanishes without closing its sockets: noticed in ~13 s
        # (etcd refuses pings more often than every 5 s)
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 3_000),
    ]
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
        opts.append(("grpc.default_authority", server_name))
    return opts


async def _addresses(endpoints: Sequence[Endpoint]) -> list[str]:
    loop = asyncio.get_running_loop()
    out: list[str] = []
    for ep in endpoints:
        try:
            ipaddress.ip_address(ep.host)
            hosts = [ep.host]
        except ValueError:
            try:
                infos = await loop.getaddrinfo(ep.host, ep.port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise InvalidArgument(f"etcd endpoint {ep}: cannot resolve: {exc}") from exc
            hosts = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for host in hosts:
            addr = f"[{host}]:{ep.port}" if ":" in host else f"{host}:{ep.port}"
            if addr not in out:
                out.append(addr)
    return out


async def channel_target(endpoints: Sequence[Endpoint]) -> str:
    """One gRPC target naming every member (``ipv4:`` or ``ipv6:`` list)."""
    addrs = await _addresses(endpoints)
    v4 = [a for a in addrs if not a.startswith("[")]
    if v4:
        return "ipv4:" + ",".join(v4)
    return "ipv6:" + ",".join(addrs)


async def open_channel(endpoints: Sequence[Endpoint], tls: Tls | None) -> grpc.aio.Channel:
    target = await channel_target(endpoints)
    if tls is None and any(ep.secure for ep in endpoints):
        tls = Tls()
    if tls is None:
        return grpc.aio.insecure_channel(target, options=channel_options())
    return grpc.aio.secure_channel(
        target, tls.credentials(), options=channel_options(server_name=endpoints[0].host)
    )
