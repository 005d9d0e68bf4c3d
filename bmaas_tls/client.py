"""Client side: what a caller trusts and proves, and channels built from it.

``ClientTls()`` is TLS trusting the system's roots; ``ca`` replaces them
with one bundle (a region's own CA); ``cert`` + ``key`` add a client
certificate (an agent proving its host); ``insecure=True`` is plaintext and
nothing else is allowed with it.  ``aio_channel`` and ``sync_channel``
are the only places in the code base that open a gRPC channel to a
control plane (etcd's channels are ``control_plane.store``'s).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bmaas_tls.errors import TlsError
from bmaas_tls.files import read_pem

ChannelOptions = Sequence[tuple[str, Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientTls:
    #: CA bundle to trust instead of the system's roots
    ca: Path | None = None
    #: client certificate and its key (both or neither)
    cert: Path | None = None
    key: Path | None = None
    #: plaintext: only when an operator asks for it
    insecure: bool = False

    def __post_init__(self) -> None:
        if self.insecure and (self.ca or self.cert or self.key):
            raise TlsError("--insecure and TLS files (--ca, --cert, --key) exclude each other")
        if bool(self.cert) != bool(self.key):
            raise TlsError("a client certificate needs its key, and a key its certificate")


def channel_credentials(tls: ClientTls) -> grpc.ChannelCredentials:
    """The credentials for *tls* (not insecure); files are read now."""
    if tls.insecure:
        raise TlsError("an insecure channel has no credentials")
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(tls.ca, "CA") if tls.ca else None,
        private_key=read_pem(tls.key, "client key") if tls.key else None,
        certificate_chain=read_pem(tls.cert, "client certificate") if tls.cert else None,
    )


def aio_channel(target: str, tls: ClientTls, options: ChannelOptions = ()) -> grpc.aio.Channel:
    if tls.insecure:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=options)


def sync_channel(target: str, tls: ClientTls, options: ChannelOptions = ()) -> grpc.Channel:
    if tls.insecure:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, channel_credentials(tls), options=options)
