"""Whole-host placement: a pure filter/score core plus a store adapter that
allocates the chosen host with an etcd compare-and-swap transaction.

Public API::

    cache = HostCache(store)              # async with cache: list + watch hosts (and liveness)
    scheduler = Scheduler(store, cache)   # rng=random.Random(seed) for determinism
    placement = await scheduler.place(instance)   # PENDING instance -> Placement
    placement.instance, placement.host, placement.attempts, placement.round_trips

``place`` raises ``NoCapacity`` (a ``ResourceExhausted``) when no host fits,
``Aborted`` when the instance itself changed meanwhile, ``NotFound`` for an
unknown instance type or placement group.

Modules: ``request`` (PlacementRequest), ``filters`` (pure predicates),
``scoring`` (pack by rack, least recently cleaned, randomized window),
``cache`` (HostCache), ``scheduler`` (Scheduler: the bind transaction).
"""

from control_plane.scheduler.cache import HostCache
from control_plane.scheduler.filters import FILTERS, first_failure, passes
from control_plane.scheduler.request import PlacementRequest
from control_plane.scheduler.scheduler import Placement, Scheduler

__all__ = [
    "FILTERS",
    "HostCache",
    "Placement",
    "PlacementRequest",
    "Scheduler",
    "first_failure",
    "passes",
]
