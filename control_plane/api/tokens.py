"""Tenant bearer-token records (digests only), kept beside the store's records.

Thin adapter until ``control_plane.store`` grows a token record kind: it
uses the store's public ``EtcdKV`` and key root, never aetcd directly.
Layout: ``{root}/tenant_tokens/{token_id}`` -> ``{"tenant", "sha256",
"create_time"}``.  A token is written with a create-if-absent transaction that
also requires ``{root}/tenants/{tenant}`` to exist, so a token can never
outlive a tenant that was never created.  The plaintext token exists only in
the ``IssueTenantToken`` response.
"""

from __future__ import annotations

import json
import secrets

from control_plane.domain.errors import Aborted, NotFound
from control_plane.store import Store
from control_plane.store.kv import cmp_absent, cmp_present, op_put


class TenantTokens:
    def __init__(self, store: Store) -> None:
        self._store = store

    def _key(self, token_id: str) -> bytes:
        return f"{self._store.keys.root}/tenant_tokens/{token_id}".encode()

    async def issue(self, tenant: str, secret_digest: str) -> str:
        """Store a new token for *tenant*; returns its id (``NotFound`` if no tenant)."""
        for _ in range(3):
            token_id = secrets.token_hex(8)
            key = self._key(token_id)
            value = json.dumps(
                {"tenant": tenant, "sha256": secret_digest, "create_time": self._store.clock()}
            ).encode()
            res = await self._store.kv.txn(
                [cmp_absent(key), cmp_present(self._store.keys.tenant(tenant))],
                [op_put(key, value)],
            )
            if res.succeeded:
                return token_id
            if await self._store.kv.get(self._store.keys.tenant(tenant)) is None:
                raise NotFound(f"tenants/{tenant} not found")
        raise Aborted("could not allocate a token id; retry")

    async def lookup(self, token_id: str) -> tuple[str, str] | None:
        """``(tenant, sha256 hex)`` of *token_id*, or None."""
        if not token_id.isalnum() or len(token_id) > 64:
            return None
        kv = await self._store.kv.get(self._key(token_id))
        if kv is None:
            return None
        data = json.loads(kv.value)
        return str(data["tenant"]), str(data["sha256"])
