"""Who is calling: bearer credentials for tenants, operators and host agents.

Every RPC reads ``authorization: Bearer <credential>`` from the invocation
metadata.  Three formats, each checked by a constant-time compare of SHA-256
digests (``hmac.compare_digest``), so neither the stored value nor timing
reveals the secret:

- operator: any of the operator tokens (``--operator-token-file``, one per
  line, and/or ``BMAAS_OPERATOR_TOKEN`` / config); only their digests are
  kept in memory, and ``set_operator_tokens`` swaps the whole set at once
  (rotation: add the new token, move clients, remove the old one).
- tenant: ``bmt_<token-id>.<secret>``.  ``IssueTenantToken`` draws 32 random
  bytes (``secrets.token_urlsafe``) and stores only ``sha256(secret)`` under
  the token id together with the tenant id, expiry and revocation; the id
  makes lookup one etcd read, the digest compare proves possession.
- agent: ``<host-id>.<secret>``, issued once by ``EnrollHost``; the host
  record stores ``sha256(secret)``.  The host id in the credential is the
  only host the agent may speak for.

Verified credentials are cached for ``cache_ttl`` seconds (keyed by the
credential's digest, never the plaintext) so a hot tenant costs one etcd read
per TTL, not per call.  A tenant token's cache entry carries the token's
expiry, checked against the wall clock on EVERY call, and is dropped by
``token_changed`` -- called for every change of a token record seen by the
replica's watch (``api.token_upkeep``) -- so a revocation bites on every
replica as fast as the watch delivers it, not after the TTL.  A lookup that
was in flight while its token changed, or while the whole cache was dropped
(``forget``: the watch restarted and may have missed events), is not cached.  Uses are remembered in
memory (``take_uses``) and written to the record by ``token_upkeep`` at most
once per interval per token: last use costs no etcd write per call.
Failures raise ``Unauthenticated`` (mapped to UNAUTHENTICATED by the error
table) with a message that never echoes the credential.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from control_plane import metrics
from control_plane.domain.errors import Unauthenticated
from control_plane.domain.tenant import TenantToken

TENANT_TOKEN_PREFIX = "bmt_"

#: token id -> the stored token record, or None if unknown.
TenantTokenLookup = Callable[[str], Awaitable[TenantToken | None]]
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
    #: monotonic time the entry is dropped
    expires: float
    #: tenant tokens: the token id and its own expiry (wall clock)
    token_id: str = ""
    token_expires: float = float("inf")


class Authenticator:
    def __init__(
        self,
        *,
        operator_tokens: Iterable[str] = (),
        tenant_tokens: TenantTokenLookup,
        host_credentials: HostCredentialLookup,
        cache_ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._operator_digests: tuple[str, ...] = ()
        self.set_operator_tokens(operator_tokens)
        self._tenant_tokens = tenant_tokens
        self._host_credentials = host_credentials
        self._ttl = cache_ttl
        self._clock = clock
        self._wall = wall_clock
        self._cache: dict[tuple[str, str], _Cached] = {}
        #: token id -> its cache key (one secret per token id)
        self._token_keys: dict[str, tuple[str, str]] = {}
        #: token id -> sequence number of its last change seen by the watch
        self._changed: dict[str, int] = {}
        self._seq = 0
        #: lookups that started before this sequence number are not cached
        #: (``forget`` or an overflow dropped what would tell them apart)
        self._floor = 0
        #: token id -> wall time of its latest use not yet written
        self._uses: dict[str, float] = {}

    @property
    def operator_token_count(self) -> int:
        return len(self._operator_digests)

    def set_operator_tokens(self, tokens: Iterable[str]) -> None:
        """Replace the accepted operator tokens (empty strings ignored)."""
        self._operator_digests = tuple(sorted({digest(t) for t in tokens if t}))

    def token_changed(self, token_id: str) -> None:
        """A tenant token record changed (revoked, touched, deleted): forget it."""
        self._seq += 1
        if len(self._changed) > 100_000:
            self._changed.clear()
            self.forget()
        self._changed[token_id] = self._seq
        key = self._token_keys.pop(token_id, None)
        if key is not None:
            self._cache.pop(key, None)

    def take_uses(self) -> dict[str, float]:
        """The tokens used since the last call, with their latest use time."""
        uses, self._uses = self._uses, {}
        return uses

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
            self._token_keys.clear()
        self._cache[(kind, cred_digest)] = _Cached(principal, self._clock() + self._ttl)

    def operator(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> None:
        """Succeeds only for the configured operator token."""
        try:
            cred = bearer(metadata)
        except Unauthenticated:
            metrics.AUTH_FAILURES.labels("operator").inc()
            raise
        mine = digest(cred)
        # compare with every configured token (no early exit: constant work)
        ok = False
        for known in self._operator_digests:
            ok |= same_digest(mine, known)
        if not ok:
            metrics.AUTH_FAILURES.labels("operator").inc()
            raise Unauthenticated("invalid operator token")

    async def tenant(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
        """The calling tenant's id."""
        try:
            cred = bearer(metadata)
        except Unauthenticated:
            metrics.AUTH_FAILURES.labels("tenant").inc()
            raise
        key = ("tenant", digest(cred))
        now = self._wall()
        hit = self._cache.get(key)
        if hit is not None and hit.expires >= self._clock() and now < hit.token_expires:
            self._uses[hit.token_id] = now
            return hit.principal
        if hit is not None:
            self._cache.pop(key, None)
        token_id, dot, secret = cred.removeprefix(TENANT_TOKEN_PREFIX).partition(".")
        found = None
        seq = self._seq
        if cred.startswith(TENANT_TOKEN_PREFIX) and dot and token_id and secret:
            found = await self._tenant_tokens(token_id)
        if found is None or not same_digest(digest(secret), found.sha256):
            metrics.AUTH_FAILURES.labels("tenant").inc()
            raise Unauthenticated("invalid tenant token")
        if not found.valid_at(now):
            metrics.AUTH_FAILURES.labels("tenant").inc()
            what = "revoked" if found.revoke_time else "expired"
            raise Unauthenticated(f"tenant token {token_id} is {what}")
        if seq >= self._floor and self._changed.get(token_id, 0) <= seq:  # no change meanwhile
            if len(self._cache) > 100_000:
                self._cache.clear()
                self._token_keys.clear()
            self._cache[key] = _Cached(
                found.tenant, self._clock() + self._ttl, token_id, found.expires
            )
            self._token_keys[token_id] = key
        self._uses[token_id] = now
        return found.tenant

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
        """Drop every cached credential; lookups in flight will not be cached."""
        self._cache.clear()
        self._token_keys.clear()
        self._seq += 1
        self._floor = self._seq
