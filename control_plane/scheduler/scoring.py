"""Scoring: which of the feasible hosts to try first (pure).

Two preferences, in order:

1. **Pack by rack** -- prefer the rack with the largest used fraction
   (``1 - free/total``), so whole racks stay free for spread placement
   groups and for rack-level maintenance.
2. **Least recently cleaned** -- inside a rack, prefer the host whose last
   wipe is oldest, spreading wear and giving fresh wipes time to settle.

Contention between replicas: with pure packing every replica would pile
onto the same fullest rack and lose most binds to each other (each lost
race costs an etcd round-trip).  So each replica adds a stable per-rack
*affinity* bonus in ``[0, 0.5)`` (a hash of its own salt and the rack):
replicas keep packing, but mostly into different racks.  Ties are broken
randomly and the first ``window`` candidates are shuffled.  With a seeded
``random.Random`` the order is deterministic (the unit tests rely on it).
"""

from __future__ import annotations

import heapq
import random
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from dataclasses import dataclass

from control_plane.domain.host import Host

DEFAULT_WINDOW = 8
DEFAULT_LIMIT = 32
#: how much a replica's own rack preference may outweigh rack fullness
DEFAULT_AFFINITY = 0.5


@dataclass(frozen=True, slots=True)
class RackStats:
    total: int
    free: int

    @property
    def used_fraction(self) -> float:
        return 1.0 - self.free / self.total if self.total else 0.0


def rack_affinity(salt: str, rack: str, *, spread: float = DEFAULT_AFFINITY) -> float:
    """A replica's stable preference for *rack*, uniform in ``[0, spread)``."""
    return zlib.crc32(f"{salt}/{rack}".encode()) / 2**32 * spread


def rack_order(
    racks: Iterable[str],
    stats: Mapping[str, RackStats],
    rng: random.Random,
    *,
    affinity: Callable[[str], float] | None = None,
) -> list[str]:
    """Racks fullest first (plus the replica's *affinity* bonus, if any);
    equal scores in random order."""
    return list(_racks_in_order(racks, stats, rng, affinity=affinity))


def _racks_in_order(
    racks: Iterable[str],
    stats: Mapping[str, RackStats],
    rng: random.Random,
    *,
    affinity: Callable[[str], float] | None = None,
) -> Iterator[str]:
    """``rack_order`` lazily: scores every rack (the same random draws, in
    the same order), then pops from a heap only as many as are consumed --
    a placement usually needs one or two of hundreds of racks."""
    keyed = []
    for r in racks:
        st = stats.get(r)
        score = 1.0 - st.free / st.total if st is not None and st.total else 0.0
        if affinity is not None:
            score += affinity(r)
        keyed.append((-score, rng.random(), r))
    heapq.heapify(keyed)
    while keyed:
        yield heapq.heappop(keyed)[2]


def host_order(hosts: Iterable[Host], rng: random.Random) -> list[Host]:
    """Oldest wipe first; ties random."""
    keyed = [(h.last_cleaned_time, rng.random(), h.id, h) for h in hosts]
    keyed.sort(key=lambda k: (k[0], k[1], k[2]))
    return [k[3] for k in keyed]


def order_candidates(
    pools: Mapping[str, Iterable[Host]],
    stats: Mapping[str, RackStats],
    rng: random.Random,
    *,
    exclude: Set[str] = frozenset(),
    window: int = DEFAULT_WINDOW,
    limit: int = DEFAULT_LIMIT,
    affinity: Callable[[str], float] | None = None,
) -> list[Host]:
    """Up to *limit* hosts from *pools* (rack -> feasible hosts), skipping
    ids in *exclude*, in the order to try them, the first *window* shuffled.
    Only the racks actually used are sorted, so the cost does not grow with
    the number of hosts."""
    out: list[Host] = []
    for rack in _racks_in_order(pools.keys(), stats, rng, affinity=affinity):
        hosts = [h for h in pools[rack] if h.id not in exclude]
        out.extend(host_order(hosts, rng)[: limit - len(out)])
        if len(out) >= limit:
            break
    head = out[:window]
    rng.shuffle(head)
    return head + out[window:]
