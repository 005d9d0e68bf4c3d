"""Tenant bearer-token records: ``tenant_tokens/{token_id}`` -> ``TenantToken``
(the SHA-256 digest of the secret, never the token itself).

``issue`` writes a new token with ONE create-if-absent transaction that also
requires ``tenants/{t}`` to exist, so a token never names a tenant that was
never created; a random id that collides is drawn again.  With a caller's
``token_id`` (derived from a request_id, so a retry names the same token)
there is one attempt, and a token already stored under that id is returned
as stored: the caller tells a replay by its different digest.  ``lookup`` is one
read.  The plaintext token exists only in the ``IssueTenantToken`` response;
the API (``control_plane.api.auth``) compares digests in constant time.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from control_plane.domain.errors import Aborted, NotFound
from control_plane.domain.tenant import TenantToken
from control_plane.store import codec
from control_plane.store.keys import KeySpace
from control_plane.store.kv import EtcdKV, cmp_absent, cmp_present, op_get, op_put

#: how many random ids ``issue`` draws before giving up (a collision of 64-bit ids)
ID_ATTEMPTS = 3


class TenantTokens:
    def __init__(self, kv: EtcdKV, keys: KeySpace, clock: Callable[[], float]) -> None:
        self._kv = kv
        self._keys = keys
        self._clock = clock

    async def issue(self, tenant: str, sha256: str, *, token_id: str = "") -> TenantToken:
        """Store a new token digest for *tenant* under a fresh random id, or
        under *token_id* unless a token already has it -- then that token is
        returned (``NotFound`` if the tenant does not exist)."""
        keys = self._keys
        tenant_key = keys.tenant(tenant)
        for _ in range(1 if token_id else ID_ATTEMPTS):
            token = TenantToken(
                id=token_id or secrets.token_hex(8),
                tenant=tenant,
                sha256=sha256,
                create_time=self._clock(),
            )
            key = keys.tenant_token(token.id)
            res = await self._kv.txn(
                [cmp_absent(key), cmp_present(tenant_key)],
                [op_put(key, codec.encode(token))],
                [op_get(tenant_key)],
            )
            if res.succeeded:
                return token
            if not res.ranges[0]:
                raise NotFound(f"tenants/{tenant} not found")
            if token_id:
                stored = await self.lookup(token_id)
                if stored is not None:
                    return stored
        raise Aborted("could not allocate a token id; retry")

    async def lookup(self, token_id: str) -> TenantToken | None:
        """The token record *token_id*, or None (also for ids that cannot exist)."""
        if not token_id.isalnum() or len(token_id) > 64:
            return None
        kv = await self._kv.get(self._keys.tenant_token(token_id))
        if kv is None:
            return None
        return codec.decode(TenantToken, kv.value)
