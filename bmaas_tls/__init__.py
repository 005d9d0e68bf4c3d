"""TLS for every gRPC endpoint of a region: one place that turns files into
gRPC credentials, shared by the control plane, the agents, bmctl, the
launchers in ``tools/region`` and the benchmarks.

- ``client``: ``ClientTls`` (a CA bundle to trust, optionally a client
  certificate, or an explicit ``insecure``) and the channels built from it;
- ``server``: ``ServerTls`` (certificate, key, optional client CA) and the
  server credentials built from it;
- ``peer``: the host a client certificate names (``bmaas-host:<id>``);
- ``errors``: the exception tree.

A file that cannot be read is a ``TlsFileError`` naming the file, raised
before any channel or port exists, so callers turn it into one line.
"""

from bmaas_tls.client import ClientTls, aio_channel, channel_credentials, sync_channel
from bmaas_tls.errors import TlsError, TlsFileError
from bmaas_tls.peer import HOST_URI_PREFIX, peer_host
from bmaas_tls.server import ServerTls, server_credentials

__all__ = [
    "HOST_URI_PREFIX",
    "ClientTls",
    "ServerTls",
    "TlsError",
    "TlsFileError",
    "aio_channel",
    "channel_credentials",
    "peer_host",
    "server_credentials",
    "sync_channel",
]
