"""Who is calling: bearer credentials for tenants, operators and host agents.

Every RPC reads ``authorization: Bearer <credential>`` from the invocation
metadata.  Three formats, each checked by a constant-time compare of SHA-256
digests (``hmac.compare_digest``), so neither the stored value nor timing
reveals the secret:

- operator: the token from ``BMAAS_OPERATOR_TOKEN`` / config; only its
  digest is kept in memory.
- tenant: ``bmt_<token-id>.<secret>``.  ``IssueTenantToken`` draws 32 random
  bytes (``secrets.token_urlsafe``) and stores only ``sha256(secret)`` under
  the token id together with the tenant id; the id makes lookup one etcd
  read, the digest compare proves possession.
- agent: ``<host-id>.<secret>``, issued once by ``EnrollHost``; the host
  record stores ``sha256(secret)``.  The host id in the credential is the
  only host the agent may speak for.

Verified credentials are cached for ``cache_ttl`` seconds (keyed by the
credential's digest, never the plaintext) so a hot tenant costs one etcd read
per TTL, not per call; revocation therefore takes up to ``cache_ttl`` to bite.
Failures raise ``Unauthenticated`` (mapped to UNAUTHENTICATED by the error
table) with a message that never echoes the credential.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from control_plane import metrics
from control_plane.domain.errors import Unauthenticated

TENANT_TOKEN_PREFIX = "bmt_"

#: token id -> (tenant id, sha256 hex of the secret), or None if unknown.
TenantTokenLookup = Callable[[str], Awaitable[tuple[str, str] | None]]
#: host id -> sha256 hex of the agent secret, or None if unknown/decommissioned.
HostCredentialLookup = Callable[[str], Awaitable[str | None]]


def new_secret() -> str:
    """32 random bytes, URL-safe base64 (no '.' in the alphabet)."""
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def derived_token_id(tenant: str, request_id: str) -> str:
    """The token id an ``IssueTenantToken`` with *request_id* gets (a retry
    names the same token); 16 hex digits like a random id.  Not a secret:
    the token's secret is what proves possession."""
    return hashlib.sha256(f"{tenant}\0{request_id}".encode()).hexdigest()[:16]


def tenant_token(token_id: str, secret: str) -> str:
    return f"{TENANT_TOKEN_PREFIX}{token_id}.{secret}"


def agent_credential(host_id: str, secret: str) -> str:
    return f"{host_id}.{secret}"


def bearer(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, cred = text.partition(" ")
            if scheme.lower() == "bearer" and cred.strip():
                return cred.strip()
            break
    raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: str
    expires: float


class Authenticator:
    def __init__(
        self,
        *,
        operator_token: str | None,
        tenant_tokens: TenantTokenLookup,
        host_credentials: HostCredentialLookup,
        cache_ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._operator_digest = digest(operator_token) if operator_token else None
        self._tenant_tokens = tenant_tokens
        self._host_credentials = host_credentials
        self._ttl = cache_ttl
        self._clock = clock
        self._cache: dict[tuple[str, str], _Cached] = {}

    def _cached(self, kind: str, cred_digest: str) -> str | None:
        hit = self._cache.get((kind, cred_digest))
        if hit is None:
            return None
        if hit.expires < self._clock():
            del self._cache[(kind, cred_digest)]
            return None
        return hit.principal

    def _remember(self, kind: str, cred_digest: str, principal: str) -> None:
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[(kind, cred_digest)] = _Cached(principal, self._clock() + self._ttl)

    def operator(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> None:
        """Succeeds only for the configured operator token."""
        try:
            cred = bearer(metadata)
        except Unauthenticated:
            metrics.AUTH_FAILURES.labels("operator").inc()
            raise
        if self._operator_digest is None or not same_digest(digest(cred), self._operator_digest):
            metrics.AUTH_FAILURES.labels("operator").inc()
            raise Unauthenticated("invalid operator token")

    async def tenant(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
        """The calling tenant's id."""
        try:
            cred = bearer(metadata)
        except Unauthenticated:
            metrics.AUTH_FAILURES.labels("tenant").inc()
            raise
        key = digest(cred)
        hit = self._cached("tenant", key)
        if hit is not None:
            return hit
        token_id, dot, secret = cred.removeprefix(TENANT_TOKEN_PREFIX).partition(".")
        found = None
        if cred.startswith(TENANT_TOKEN_PREFIX) and dot and token_id and secret:
            found = await self._tenant_tokens(token_id)
        if found is None or not same_digest(digest(secret), found[1]):
            metrics.AUTH_FAILURES.labels("tenant").inc()
            raise Unauthenticated("invalid tenant token")
        self._remember("tenant", key, found[0])
        return found[0]

    async def agent(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
        """The id of the host whose agent is calling."""
        try:
            cred = bearer(metadata)
        except Unauthenticated:
            metrics.AUTH_FAILURES.labels("agent").inc()
            raise
        key = digest(cred)
        hit = self._cached("agent", key)
        if hit is not None:
            return hit
        host_id, dot, secret = cred.rpartition(".")
        stored = await self._host_credentials(host_id) if dot and host_id and secret else None
        if stored is None or not same_digest(digest(secret), stored):
            metrics.AUTH_FAILURES.labels("agent").inc()
            raise Unauthenticated("invalid agent credential")
        self._remember("agent", key, host_id)
        return host_id

    def forget(self) -> None:
        self._cache.clear()
