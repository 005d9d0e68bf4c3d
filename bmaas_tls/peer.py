"""Which host a verified client certificate names.

An agent's certificate carries the URI SAN ``bmaas-host:<id>`` (issued by
the region's CA); gRPC has verified the chain before a handler runs, and
exposes the SANs in the call's auth context.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

HOST_URI_PREFIX = "bmaas-host:"


def peer_host(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The host id of the peer's certificate, or None (no certificate, or
    one that names no host, or more than one)."""
    names = {
        value.decode(errors="replace")
        for key in ("x509_subject_alternative_name", "x509_uri_subject_alternative_name")
        for value in auth_context.get(key, ())
    }
    hosts = {n.removeprefix(HOST_URI_PREFIX) for n in names if n.startswith(HOST_URI_PREFIX)}
    return hosts.pop() if len(hosts) == 1 else None
