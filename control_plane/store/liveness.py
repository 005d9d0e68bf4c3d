"""Host liveness on etcd leases.

Each heartbeat of host *h* keeps ``heartbeats/{h}`` alive: the first
heartbeat grants a lease of ``ttl`` seconds and puts the key bound to it;
later heartbeats only refresh the lease (one LeaseKeepAlive round-trip, no
write, so the host record's ``mod_revision`` never moves).  When heartbeats
stop, etcd expires the lease and deletes the key: that DELETE event is what
makes a host "silent".  A keepalive that finds the lease already expired
grants a new lease and puts the key again (a PUT with ``version == 1``: the
host came back).

The lease map is per replica: if the agent reconnects to another replica,
that replica grants its own lease and the old one simply expires (the key
is re-put under the new lease first, so it never disappears in between).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from control_plane.store.keys import KeySpace, prefix_range_end
from control_plane.store.kv import EtcdKV, op_put

DEFAULT_HEARTBEAT_TTL = 10


@dataclass(frozen=True, slots=True)
class HeartbeatEvent:
    host: str
    #: True: heartbeats (re)started; False: the lease expired or was revoked
    alive: bool
    revision: int


class Liveness:
    def __init__(
        self, kv: EtcdKV, keys: KeySpace, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._kv = kv
        self._keys = keys
        self._clock = clock
        self._leases: dict[str, int] = {}

    async def heartbeat(self, host: str, *, ttl: int = DEFAULT_HEARTBEAT_TTL) -> None:
        """Record that *host*'s agent is alive for the next *ttl* seconds."""
        lease = self._leases.get(host)
        if lease is not None and await self._kv.lease_keepalive(lease) > 0:
            return
        lease = await self._kv.lease_grant(ttl)
        value = json.dumps({"host": host, "since": self._clock(), "ttl": ttl}).encode()
        await self._kv.txn([], [op_put(self._keys.heartbeat(host), value, lease=lease)])
        self._leases[host] = lease

    async def expire(self, host: str) -> None:
        """Revoke *host*'s lease now (tests, or an operator fencing a host)."""
        lease = self._leases.pop(host, None)
        if lease is not None:
            await self._kv.lease_revoke(lease)
        await self._kv.delete(self._keys.heartbeat(host))

    def forget(self, host: str) -> None:
        """Stop tracking *host* locally; its lease then expires on its own."""
        self._leases.pop(host, None)

    async def is_alive(self, host: str) -> bool:
        return await self._kv.get(self._keys.heartbeat(host)) is not None

    async def live_hosts(self) -> tuple[set[str], int]:
        """Ids of hosts whose heartbeat lease is alive, and the read revision."""
        prefix = self._keys.heartbeats_prefix()
        kvs, _, rev = await self._kv.range(prefix, prefix_range_end(prefix), keys_only=True)
        return {self._keys.last_segment(kv.key) for kv in kvs}, rev

    async def watch(self, *, start_revision: int) -> AsyncGenerator[HeartbeatEvent, None]:
        """Heartbeat sessions starting (PUT, version 1) and ending (DELETE)."""
        prefix = self._keys.heartbeats_prefix()
        async for deleted, kv in self._kv.watch_shared(prefix, start_revision=start_revision):
            if deleted or kv.version == 1:
                host = self._keys.last_segment(kv.key)
                yield HeartbeatEvent(host, not deleted, kv.mod_revision)

    async def aclose(self) -> None:
        """Forget local leases (they expire on their own; a replica restart is
        not an agent failure until the TTL passes)."""
        self._leases.clear()
