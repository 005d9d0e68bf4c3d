"""Server side: the certificate a control plane presents, and the CA its
agents' client certificates must chain to.

With ``client_ca`` the server asks every client for a certificate and
verifies one that is presented against that CA; a client without one
(bmctl: tenants and operators prove themselves with bearer tokens) is
still let in, and the agent servicer then requires one that names its host
(``bmaas_tls.peer``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from bmaas_tls.files import read_pem


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerTls:
    cert: Path
    key: Path
    client_ca: Path | None = None


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    """The credentials for *tls*; files are read now (``TlsFileError``)."""
    pair = (read_pem(tls.key, "--tls-key"), read_pem(tls.cert, "--tls-cert"))
    client_ca = read_pem(tls.client_ca, "--tls-client-ca") if tls.client_ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca)
