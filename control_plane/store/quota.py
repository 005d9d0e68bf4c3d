"""The quota ledger: two monotonic counters per tenant, and this replica's
memory of them.

``usage/{t}`` is what was charged (creates, growth), ``released/{t}`` what
was given back (terminations, deletes); a tenant uses ``usage - released``.
A charge compares the tenant record and the charged counter and judges the
quota on the released counter as last seen -- never compared, because a
stale (lower) released value only overstates usage, so the check stays
safe (and a refusal is only given on freshly read values).  A release
compares only the released counter.  So the APIs' creates and the
controllers' terminations never invalidate each other's transactions, and
two charges of one tenant (two replicas, or two calls of one replica) can
never both commit on the same counter value: the quota is enforced by the
transaction, on every replica at once.

"Seen" is what this replica last read or wrote (merged by revision): a
write remembers the counter it wrote, so the next one of the tenant goes
straight to the txn.  A stale memory only costs one failed txn (whose
failure branch returns the fresh tenant and counters).

No lock: concurrent writes of one tenant, on one replica or on several,
race in etcd, where the compares make exactly one of them commit per
counter value; the others learn the new value from their failure branch
and go again, spread over the writes of the tenant in flight on the
replica (``writing``/``spread``), and a refusal (``QuotaExceeded``) is only
ever given on freshly read values.  Creates of one tenant on one replica
mostly do not race at all: they share transactions (``claims``, group
commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterable, Iterator, Sequence

from control_plane.domain.errors import NotFound, QuotaExceeded
from control_plane.domain.tenant import QuotaUsage, Tenant
from control_plane.store import codec
from control_plane.store.keys import KeySpace
from control_plane.store.kv import KV, EtcdKV
from control_plane.store.records import ZERO
from control_plane.store.txn import Outcome, Read, Txn

#: How many times a write is retried when only the tenant's usage counter moved.
USAGE_RETRIES = 200

#: a tenant's (tenant record, ``usage/{t}`` charged, ``released/{t}``) versions
Seen = tuple[KV | None, KV | None, KV | None]


def counter(kv: KV | None) -> QuotaUsage:
    return codec.decode(QuotaUsage, kv.value) if kv is not None else ZERO


def net(charged: KV | None, released: KV | None) -> QuotaUsage:
    """Usage held now: charged minus released (never below zero)."""
    used = counter(charged) - counter(released)
    return QuotaUsage(instances=max(used.instances, 0), volume_gib=max(used.volume_gib, 0))


def check_fits(tenant: str, seen: Seen, delta: QuotaUsage, *, what: str = "the change") -> None:
    """``QuotaExceeded`` unless *delta* fits *tenant*'s quota on *seen*."""
    owner, charged, released = seen
    if owner is None:
        raise NotFound(f"tenants/{tenant} not found")
    quota = codec.decode(Tenant, owner.value).quota
    used = net(charged, released)
    if not (used + delta).fits(quota):
        raise QuotaExceeded(
            f"tenants/{tenant}: quota exceeded (using {used.instances} instances"
            f" / {used.volume_gib} GiB of {quota.max_instances} / "
            f"{quota.max_volume_gib} GiB; {what} needs {delta.instances} / "
            f"{delta.volume_gib} GiB more)"
        )


def _newer(held: KV | None, offered: KV | None) -> KV | None:
    if offered is None or (held is not None and held.mod_revision >= offered.mod_revision):
        return held
    return offered


async def backoff(attempt: int) -> None:
    """Jittered exponential pause before retrying a lost usage race (1 ms .. 50 ms)."""
    await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))


#: longest pause before retrying a write that lost its tenant's counter
MAX_SPREAD = 0.5


class StateReads:
    """The failure-branch reads of one tenant's ledger state."""

    __slots__ = ("charged", "owner", "released")

    def __init__(self, txn: Txn, keys: KeySpace, tenant: str) -> None:
        self.charged = txn.read_on_failure(keys.usage(tenant))
        self.released = txn.read_on_failure(keys.released(tenant))
        self.owner = txn.read_on_failure(keys.tenant(tenant))

    def seen(self, out: Outcome) -> Seen:
        return (out.get(self.owner), out.get(self.charged), out.get(self.released))


class QuotaLedger:
    def __init__(self, kv: EtcdKV, keys: KeySpace) -> None:
        self._kv = kv
        self._keys = keys
        #: tenant -> (tenant record, charged counter, released counter) as last seen
        self._seen: dict[str, Seen] = {}
        #: tenant -> writes of its counters in progress on this replica
        self._writers: dict[str, int] = {}

    @contextlib.contextmanager
    def writing(self, tenants: Iterable[str]) -> Iterator[None]:
        """Count a write of *tenants*' counters as in progress (nobody waits
        on this count; it only sizes ``spread``)."""
        names = sorted(set(tenants))
        for t in names:
            self._writers[t] = self._writers.get(t, 0) + 1
        try:
            yield
        finally:
            for t in names:
                left = self._writers[t] - 1
                if left:
                    self._writers[t] = left
                else:
                    del self._writers[t]

    async def spread(self, tenants: Iterable[str], latency: float) -> None:
        """Pause before retrying a write that lost the race for a counter of
        *tenants*: uniformly over as many txn latencies as there are writes
        of the tenant in progress here, so the losers of one round come back
        one by one instead of all racing again (each round has one winner)."""
        n = max((self._writers.get(t, 1) for t in tenants), default=1)
        await asyncio.sleep(random.uniform(0, min(MAX_SPREAD, n * max(latency, 0.001))))

    def seen(self, tenant: str) -> Seen | None:
        return self._seen.get(tenant)

    def forget(self, tenant: str) -> None:
        self._seen.pop(tenant, None)

    def learn(self, tenant: str, seen: Seen) -> None:
        """*seen* was read just now (a read, or a failed txn's failure branch);
        a newer version already held (a concurrent write's) is kept."""
        held = self._seen.get(tenant)
        if held is None or seen[0] is None:
            self._seen[tenant] = seen
            return
        self._seen[tenant] = (
            _newer(held[0], seen[0]),
            _newer(held[1], seen[1]),
            _newer(held[2], seen[2]),
        )

    async def get_usage(self, tenant: str) -> QuotaUsage:
        """What *tenant* holds now: charged minus released, read at one revision."""
        (charged, released), _ = await self._kv.get_many(
            [self._keys.usage(tenant), self._keys.released(tenant)]
        )
        return net(charged, released)

    async def read(self, tenants: Sequence[str], extra: Sequence[bytes] = ()) -> list[KV | None]:
        """*extra* keys and every tenant's ledger state in ONE read; the
        state is learned, the *extra* values returned."""
        got, _ = await self._kv.get_many(
            [
                *extra,
                *(self._keys.usage(t) for t in tenants),
                *(self._keys.released(t) for t in tenants),
                *(self._keys.tenant(t) for t in tenants),
            ]
        )
        n, m = len(extra), len(tenants)
        for j, tenant in enumerate(tenants):
            self._seen[tenant] = (got[n + 2 * m + j], got[n + j], got[n + m + j])
        return got[:n]

    def apply(
        self, txn: Txn, deltas: dict[str, QuotaUsage], seen: dict[str, Seen]
    ) -> list[tuple[str, bytes, bytes]]:
        """Add to *txn* the compares and puts that apply *deltas*; the
        counters written (tenant, key, value).  Growth goes to ``usage/{t}``
        (charged): it must fit the tenant's quota (``QuotaExceeded``) judged
        on charged minus released, and the txn compares the tenant and the
        charged counter -- NOT the released one.  Shrinkage goes to
        ``released/{t}``, compared on its own revision."""
        written: list[tuple[str, bytes, bytes]] = []
        for tenant in sorted(deltas):
            owner, charged_kv, released_kv = seen[tenant]
            delta = deltas[tenant]
            grow = QuotaUsage(
                instances=max(delta.instances, 0), volume_gib=max(delta.volume_gib, 0)
            )
            shrink = grow - delta
            if not grow.is_zero:
                check_fits(tenant, seen[tenant], delta)
                assert owner is not None
                key = self._keys.usage(tenant)
                value = codec.encode(counter(charged_kv) + grow)
                txn.require_mod(self._keys.tenant(tenant), owner.mod_revision)
                txn.require_mod(key, charged_kv.mod_revision if charged_kv else 0)
                txn.put(key, value)
                written.append((tenant, key, value))
            if not shrink.is_zero:
                key = self._keys.released(tenant)
                value = codec.encode(counter(released_kv) + shrink)
                txn.require_mod(key, released_kv.mod_revision if released_kv else 0)
                txn.put(key, value)
                written.append((tenant, key, value))
        return written

    async def release(self, txn: Txn, deltas: dict[str, QuotaUsage]) -> None:
        """Add releases (negative *deltas*) to *txn*, on freshly read counters."""
        tenants = sorted(deltas)
        got, _ = await self._kv.get_many([self._keys.released(t) for t in tenants])
        for t in tenants:
            self._seen.pop(t, None)
        seen: dict[str, Seen] = {t: (None, None, kv) for t, kv in zip(tenants, got, strict=True)}
        self.apply(txn, deltas, seen)

    def wrote(self, written: Sequence[tuple[str, bytes, bytes]], revision: int) -> None:
        """The counters *written* by a txn committed at *revision*."""
        for tenant, key, value in written:
            counter_kv = KV(key, value, revision, 0, 0, 0)
            if key == self._keys.usage(tenant):
                self.remember(tenant, usage=counter_kv)
            else:
                self.remember(tenant, released=counter_kv)

    def remember(
        self,
        tenant: str,
        *,
        usage: KV | None = None,
        owner: KV | None = None,
        released: KV | None = None,
    ) -> None:
        """Merge newer versions of *tenant*'s counters / tenant record into
        what was seen (a version older than the one held is ignored: txn
        results of concurrent writes come back in any order)."""
        held = self._seen.get(tenant)
        if held is None:
            return  # only a full read starts an entry
        self._seen[tenant] = (
            _newer(held[0], owner),
            _newer(held[1], usage),
            _newer(held[2], released),
        )


__all__ = [
    "USAGE_RETRIES",
    "QuotaLedger",
    "Read",
    "Seen",
    "StateReads",
    "backoff",
    "check_fits",
    "counter",
    "net",
]
