"""Server side: the certificate a control plane presents, and the CA its
agents' client certificates must chain to.

gRPC's server credentials either never ask for a client certificate or
require one; there is no "ask, but let clients without one in".  So a
control plane has two ports when its agents prove their host: the API
port (no client certificate: bmctl's tenants and operators prove
themselves with bearer tokens) and the agent port
(``require_client_cert=True``: the handshake fails without a certificate
chaining to ``client_ca``).  The agent servicer then checks that the
certificate names the credential's host (``bmaas_tls.peer``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from bmaas_tls.errors import TlsError
from bmaas_tls.files import read_pem


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerTls:
    cert: Path
    key: Path
    client_ca: Path | None = None


def server_credentials(
    tls: ServerTls, *, require_client_cert: bool = False
) -> grpc.ServerCredentials:
    """The credentials for *tls*; files are read now (``TlsFileError``).
    With *require_client_cert*, a client must present a certificate that
    chains to ``tls.client_ca``."""
    pair = (read_pem(tls.key, "--tls-key"), read_pem(tls.cert, "--tls-cert"))
    if not require_client_cert:
        return grpc.ssl_server_credentials([pair])
    if tls.client_ca is None:
        raise TlsError("client certificates need --tls-client-ca")
    client_ca = read_pem(tls.client_ca, "--tls-client-ca")
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=True
    )
