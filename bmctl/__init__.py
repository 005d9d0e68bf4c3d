"""``bmctl``: the command-line client for operators and tenants.

gRPC's core logs a failed TLS handshake on stderr at INFO level, before
bmctl reports the same failure as its one error line; bmctl asks it for
errors only (unless the caller set ``GRPC_VERBOSITY``).  This runs before
anything imports grpc."""

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
