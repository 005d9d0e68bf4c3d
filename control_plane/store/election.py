"""Leader election primitives on an etcd lease.

The leader of election *e* is whoever holds ``leases/{e}``, a key bound to
the candidate's lease and holding its identity::

    campaign   txn: if version(leases/e)=0 then put leases/e=identity (lease L)
                    else get leases/e
               -> leader iff the put happened, or the stored value is ours
                  under the same lease
    keepalive  LeaseKeepAlive(L) every ttl/3; TTL 0 means leadership is lost
    resign     txn: if value(leases/e)=identity then delete; then revoke L

If the leader dies, etcd deletes the key when L expires (within the TTL);
followers watch the key and campaign on its DELETE.

A term is identified by the seat's ``create_revision``: ``fence(e, rev)``
is the ``Fence`` a leader sets around its work (``kv.fenced``) so that
every txn it sends also requires the seat to still be that incarnation --
once the lease expired and the key was deleted (or re-created by another
replica), the deposed leader's txns fail with ``LeadershipLost``.  The policy (loops,
timing, fencing) lives in ``control_plane.controllers.leader``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from control_plane.store.keys import KeySpace
from control_plane.store.kv import (
    EtcdKV,
    Fence,
    cmp_absent,
    cmp_value,
    op_delete,
    op_get,
    op_put,
)


class Elections:
    def __init__(self, kv: EtcdKV, keys: KeySpace) -> None:
        self._kv = kv
        self._keys = keys

    async def grant_lease(self, ttl: int) -> int:
        return await self._kv.lease_grant(ttl)

    async def keepalive(self, lease_id: int) -> int:
        """Refresh the lease; remaining TTL, 0 if it already expired."""
        return await self._kv.lease_keepalive(lease_id)

    async def revoke_lease(self, lease_id: int) -> None:
        await self._kv.lease_revoke(lease_id)

    async def campaign(self, election: str, identity: str, lease_id: int) -> tuple[bool, int, int]:
        """Try to become leader; ``(is_leader, revision, term)`` where *term*
        is the seat's ``create_revision`` when we hold it (else 0)."""
        key = self._keys.election(election)
        res = await self._kv.txn(
            [cmp_absent(key)], [op_put(key, identity.encode(), lease=lease_id)], [op_get(key)]
        )
        if res.succeeded:
            return True, res.revision, res.revision
        got = res.ranges[0]
        mine = bool(got) and got[0].value == identity.encode() and got[0].lease == lease_id
        return mine, res.revision, got[0].create_revision if mine else 0

    def fence(self, election: str, term: int) -> Fence:
        """The fence of the term created at revision *term*."""
        return Fence(self._keys.election(election), term)

    async def leader(self, election: str) -> str | None:
        kv = await self._kv.get(self._keys.election(election))
        return kv.value.decode() if kv else None

    async def resign(self, election: str, identity: str) -> None:
        key = self._keys.election(election)
        await self._kv.txn([cmp_value(key, identity.encode())], [op_delete(key)])

    async def watch(
        self, election: str, *, start_revision: int
    ) -> AsyncGenerator[str | None, None]:
        """The leader's identity after each change (None when the seat is empty)."""
        key = self._keys.election(election)
        async for deleted, kv in self._kv.watch_resuming(key, start_revision=start_revision):
            if kv.key == key:
                yield None if deleted else kv.value.decode()
