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

The lifecycle is in the record: ``revoke`` and ``touch`` (last use) are
read-compare-write on the key's mod_revision (a lost race is re-read;
``touch`` never moves ``last_use_time`` backwards and gives up after a few
lost races, since a later use writes it again).  Revoked and expired
records stay (``ListTenantTokens`` shows them) until ``purge`` -- run by
the leader's housekeeping -- deletes those that ended before a cut-off
(each delete compared on the record's mod_revision, so a record changed
meanwhile is left for the next pass).  ``changes`` is the watch every replica's
authenticator follows to forget a token the moment its record changes.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncGenerator, Callable

from control_plane.domain.errors import Aborted, NotFound
from control_plane.domain.tenant import TenantToken
from control_plane.store import codec
from control_plane.store.keys import KeySpace, prefix_range_end
from control_plane.store.kv import (
    EtcdKV,
    cmp_absent,
    cmp_mod,
    cmp_present,
    op_delete,
    op_get,
    op_put,
)

#: how many random ids ``issue`` draws before giving up (a collision of 64-bit ids)
ID_ATTEMPTS = 3
#: read-compare-write attempts of ``revoke`` / ``touch``
CAS_ATTEMPTS = 5


class TenantTokens:
    def __init__(self, kv: EtcdKV, keys: KeySpace, clock: Callable[[], float]) -> None:
        self._kv = kv
        self._keys = keys
        self._clock = clock

    @property
    def _prefix(self) -> bytes:
        return self._keys.tenant_token("")

    async def issue(
        self, tenant: str, sha256: str, *, ttl: float, token_id: str = ""
    ) -> TenantToken:
        """Store a new token digest for *tenant*, valid for *ttl* seconds, under
        a fresh random id, or under *token_id* unless a token already has it --
        then that token is returned (``NotFound`` if the tenant does not exist)."""
        keys = self._keys
        tenant_key = keys.tenant(tenant)
        for _ in range(1 if token_id else ID_ATTEMPTS):
            now = self._clock()
            token = TenantToken(
                id=token_id or secrets.token_hex(8),
                tenant=tenant,
                sha256=sha256,
                create_time=now,
                expire_time=now + ttl,
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

    async def _read(self, token_id: str) -> tuple[TenantToken, int] | None:
        if not token_id.isalnum() or len(token_id) > 64:
            return None
        kv = await self._kv.get(self._keys.tenant_token(token_id))
        if kv is None:
            return None
        return codec.decode(TenantToken, kv.value), kv.mod_revision

    async def lookup(self, token_id: str) -> TenantToken | None:
        """The token record *token_id*, or None (also for ids that cannot exist)."""
        found = await self._read(token_id)
        return found[0] if found is not None else None

    async def list(self, tenant: str) -> list[TenantToken]:
        """Every token of *tenant* (revoked and expired ones too), newest first."""
        prefix = self._prefix
        kvs, _, _ = await self._kv.range(prefix, prefix_range_end(prefix))
        tokens = [codec.decode(TenantToken, kv.value) for kv in kvs]
        mine = [t for t in tokens if t.tenant == tenant]
        return sorted(mine, key=lambda t: (-t.create_time, t.id))

    async def _update(
        self, token_id: str, change: Callable[[TenantToken], TenantToken | None]
    ) -> TenantToken | None:
        """Apply *change* (None: nothing to write) by CAS; the record as it
        ends up, or None if there is no such token."""
        for _ in range(CAS_ATTEMPTS):
            found = await self._read(token_id)
            if found is None:
                return None
            token, rev = found
            new = change(token)
            if new is None:
                return token
            key = self._keys.tenant_token(token_id)
            res = await self._kv.txn([cmp_mod(key, rev)], [op_put(key, codec.encode(new))], [])
            if res.succeeded:
                return new
        raise Aborted(f"tenant token {token_id} changed under us; retry")

    async def revoke(self, token_id: str) -> TenantToken | None:
        """Mark *token_id* revoked (a revoked token is returned unchanged)."""
        now = self._clock()
        return await self._update(
            token_id,
            lambda t: None if t.revoke_time else dataclasses.replace(t, revoke_time=now),
        )

    async def touch(self, token_id: str, when: float) -> None:
        """Record a use of *token_id* at *when* (never moves it backwards)."""
        await self._update(
            token_id,
            lambda t: (
                None if t.last_use_time >= when else dataclasses.replace(t, last_use_time=when)
            ),
        )

    async def purge(self, *, ended_before: float) -> int:
        """Delete the records of tokens revoked or expired before
        *ended_before*; how many were deleted."""
        prefix = self._prefix
        kvs, _, _ = await self._kv.range(prefix, prefix_range_end(prefix))
        deleted = 0
        for kv in kvs:
            token = codec.decode(TenantToken, kv.value)
            ended = min(token.expires, token.revoke_time or token.expires)
            if ended >= ended_before:
                continue
            res = await self._kv.txn([cmp_mod(kv.key, kv.mod_revision)], [op_delete(kv.key)], [])
            deleted += res.succeeded
        return deleted

    async def revision(self) -> int:
        """The store's current revision (where ``changes`` should start)."""
        prefix = self._prefix
        _, _, rev = await self._kv.range(prefix, prefix_range_end(prefix), keys_only=True, limit=1)
        return rev

    async def changes(self, *, start_revision: int) -> AsyncGenerator[str, None]:
        """The id of every token record written or deleted from *start_revision*
        on (``RevisionCompacted`` propagates: the caller starts over)."""
        prefix = self._prefix
        async for _deleted, kv in self._kv.watch_shared(prefix, start_revision=start_revision):
            yield kv.key[len(prefix) :].decode()
