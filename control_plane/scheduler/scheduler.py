"""The store adapter: place a PENDING instance on a host by etcd transaction.

``place(instance)``:

1. resolve the instance type (cached; types are immutable by convention)
   and, for a placement group, read the group (its racks in use);
2. ask the ``HostCache`` for the feasible pools and order them
   (``scoring.order_candidates``);
3. try candidates one by one with ``Store.update_many`` -- ONE txn::

       if mod(instance)=etag and mod(host)=etag [and mod(group)=etag]
       then put instance(SCHEDULED, host=h), put host(ALLOCATED, assigned=i)
            [, put group(+ (i, rack))]

   A host that another placement of this replica is binding right now is
   skipped (no local races).  A lost race on the host marks it stale, waits
   (up to ``CATCH_UP``) for the cache's watch to reach the revision that
   beat us, and ranks afresh; a lost race on the group re-reads it and
   ranks afresh; a lost race on the instance means someone else changed it
   (e.g. another replica placed it): ``Aborted``.
4. no feasible candidate left: first a revision barrier
   (``HostCache.catch_up``: the cache takes every host change etcd holds
   now, so it is at least as new as etcd was when the request arrived) and
   rank again; still none: ``NoCapacity`` with the reason; every one of
   ``max_attempts`` binds lost a race: ``Aborted`` (retry later).

In the common case a placement costs exactly one etcd round-trip (the
txn); ``Placement.round_trips`` reports the real count.

``create_placed(instance)`` is the API's path for a new instance: the same
loop, but each try is ``Store.create_or_replay`` of the instance already
SCHEDULED on the candidate (it went PENDING -> SCHEDULED through the
lifecycle table in memory) with the host and group updates ``together`` --
create, quota charge, idempotency record and bind in ONE txn, so a lost
race on the host wrote nothing and the next candidate is tried.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from control_plane import metrics
from control_plane.domain.compute import Instance, InstanceType
from control_plane.domain.conditions import ConditionStatus, ConditionType, set_condition
from control_plane.domain.errors import Aborted, FailedPrecondition, NoCapacity
from control_plane.domain.host import Host
from control_plane.domain.lifecycle import HostEvent, InstanceEvent, InstanceState
from control_plane.domain.placement import PlacementGroup
from control_plane.domain.transitions import apply_host_event, apply_instance_event
from control_plane.scheduler.cache import HostCache
from control_plane.scheduler.request import PlacementRequest
from control_plane.scheduler.scoring import (
    DEFAULT_AFFINITY,
    DEFAULT_LIMIT,
    DEFAULT_WINDOW,
    order_candidates,
    rack_affinity,
)
from control_plane.store import Created, RecordChanged, RecordGone, Store

DEFAULT_MAX_ATTEMPTS = 16

#: writes the bound records (instance, host[, group]) in one txn; as written
_Commit = Callable[[Sequence[Instance | Host | PlacementGroup]], Awaitable[Sequence[object]]]


class _Replayed(Exception):
    """``create_placed`` found its request_id already used: stop placing."""


#: how long a lost race waits for the host cache to catch up (seconds)
CATCH_UP = 0.05


@dataclasses.dataclass(frozen=True, slots=True)
class Placement:
    instance: Instance
    host: Host
    #: bind transactions tried (1 = no race lost)
    attempts: int
    #: etcd round-trips this placement made
    round_trips: int


class Scheduler:
    """Places instances; safe to run in any number of replicas concurrently."""

    def __init__(
        self,
        store: Store,
        cache: HostCache,
        *,
        rng: random.Random | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        window: int = DEFAULT_WINDOW,
        limit: int = DEFAULT_LIMIT,
        affinity_spread: float = DEFAULT_AFFINITY,
    ) -> None:
        self.store = store
        self.cache = cache
        self.rng = rng or random.Random()
        self.max_attempts = max_attempts
        self.window = window
        self.limit = limit
        self._types: dict[str, InstanceType] = {}
        self._salt = f"{self.rng.random():.17f}"
        self.affinity_spread = affinity_spread
        self._affinities: dict[str, float] = {}
        #: hosts an in-flight placement of THIS replica is binding right now;
        #: other local placements skip them instead of racing for them
        self._inflight: set[str] = set()

    def _affinity(self, rack: str) -> float:
        bonus = self._affinities.get(rack)
        if bonus is None:
            bonus = self._affinities[rack] = rack_affinity(
                self._salt, rack, spread=self.affinity_spread
            )
        return bonus

    async def _instance_type(self, name: str) -> tuple[InstanceType, int]:
        cached = self._types.get(name)
        if cached is not None:
            return cached, 0
        itype = await self.store.get(InstanceType, name)
        self._types[name] = itype
        return itype, 1

    async def place(self, instance: Instance) -> Placement:
        """Bind the PENDING *instance* to a host (see the module docstring)."""
        return await self._place(instance, self.store.update_many)

    async def create_placed(
        self, instance: Instance, *, request_id: str = "", fingerprint: str = ""
    ) -> Created[Instance]:
        """Create the new PENDING *instance* already bound to a host: ONE txn
        that creates it SCHEDULED (quota charge and idempotency record
        included, see ``Store.create_or_replay``) and allocates the host
        (and joins the placement group).  A replayed *request_id* returns
        the first call's instance and binds nothing; ``NoCapacity`` (no
        feasible host) writes nothing."""
        replayed: list[Created[Instance]] = []

        async def commit(objs: Sequence[Instance | Host | PlacementGroup]) -> list[object]:
            new = objs[0]
            assert isinstance(new, Instance)
            created = await self.store.create_or_replay(
                new, request_id=request_id, fingerprint=fingerprint, together=objs[1:]
            )
            if created.replayed:
                replayed.append(created)
                raise _Replayed
            return [created.record, *created.together]

        try:
            placed = await self._place(instance, commit)
        except _Replayed:
            return replayed[0]
        return Created(placed.instance, False)

    async def _place(self, instance: Instance, commit: _Commit) -> Placement:
        """``_find_and_bind``, timed in ``bmaas_cp_scheduling_duration_seconds{result}``."""
        start = time.perf_counter()
        result = "error"
        try:
            placement = await self._find_and_bind(instance, commit)
            result = "placed"
            return placement
        except NoCapacity:
            result = "no_capacity"
            raise
        except Aborted:
            result = "conflict"
            raise
        except _Replayed:
            result = "replayed"
            raise
        finally:
            metrics.SCHEDULING_DURATION.labels(result).observe(time.perf_counter() - start)

    async def _find_and_bind(self, instance: Instance, commit: _Commit) -> Placement:
        if instance.state != InstanceState.PENDING:
            raise FailedPrecondition(f"{instance.name} is {instance.state}, not PENDING")
        itype, trips = await self._instance_type(instance.instance_type)
        group: PlacementGroup | None = None
        if instance.placement_group:
            group = await self.store.get(PlacementGroup, instance.placement_group)
            trips += 1
        tried: set[str] = set()  # hosts gone from the store while we tried them
        lost = 0  # transactions lost to a newer version of the host
        attempts = 0
        caught_up = False
        while attempts < self.max_attempts:
            req = PlacementRequest(
                instance=instance.name,
                host_class=itype.host_class,
                zone=instance.zone,
                placement_group=instance.placement_group,
                excluded_racks=group.racks if group else frozenset(),
            )
            pools = self.cache.pools(req)
            candidates = order_candidates(
                pools,
                self.cache.rack_stats(),
                self.rng,
                exclude=tried | self._inflight,
                affinity=self._affinity if self.affinity_spread > 0 else None,
                window=self.window,
                limit=self.limit,
            )
            if not candidates:
                if not caught_up:
                    # revision barrier: never "no capacity" from a cache behind etcd
                    await self.cache.catch_up()
                    trips += 2
                    caught_up = True
                    continue
                raise NoCapacity(self._explain(itype, instance, lost, attempts))
            for host in candidates:
                if attempts >= self.max_attempts:
                    break
                if host.id in self._inflight or self.cache.get(host.id) is not host:
                    continue  # changed (or taken locally) since the candidates were ordered
                attempts += 1
                trips += 1
                objs = _bind(instance, host, group, now=self.store.clock())
                self._inflight.add(host.id)
                try:
                    written = await commit(objs)
                except RecordChanged as exc:
                    if exc.name == host.name:
                        # the cache lags behind another replica or the host's agent:
                        # let it catch up to the revision that beat us, then rank
                        # afresh (the host too, if it is still free at that revision)
                        lost += 1
                        self.cache.mark_stale(host.id, exc.revision)
                        await self.cache.wait_for_revision(exc.revision, within=CATCH_UP)
                        break
                    if group is not None and exc.name == group.name:
                        group = await self.store.get(PlacementGroup, group.name)
                        trips += 1
                        break
                    raise Aborted(f"{instance.name} changed while being placed") from exc
                except RecordGone as exc:
                    if exc.name != host.name:
                        raise
                    tried.add(host.id)
                    self.cache.mark_stale(host.id, 0)
                    continue
                finally:
                    self._inflight.discard(host.id)
                new_instance, new_host = written[0], written[1]
                assert isinstance(new_instance, Instance) and isinstance(new_host, Host)
                self.cache.apply(new_host)
                return Placement(new_instance, new_host, attempts, trips)
            # the group changed, or every candidate was lost: recompute
        raise Aborted(f"{instance.name}: lost {attempts} races for hosts; retry")

    def _explain(self, itype: InstanceType, instance: Instance, lost: int, attempts: int) -> str:
        zone = f" in zone {instance.zone}" if instance.zone else ""
        return (
            f"no AVAILABLE host of class {itype.host_class}{zone} for {instance.name} "
            f"({self.cache.count_class(itype.host_class)} hosts of that class known, "
            f"{self.cache.free_count()} free overall, {lost} lost to races "
            f"in {attempts} attempts)"
        )


def _bind(
    instance: Instance, host: Host, group: PlacementGroup | None, *, now: float
) -> list[Instance | Host | PlacementGroup]:
    new_instance = apply_instance_event(instance, InstanceEvent.SCHEDULE)
    new_instance = dataclasses.replace(
        new_instance,
        host=host.name,
        conditions=set_condition(
            new_instance.conditions,
            type_=ConditionType.SCHEDULED,
            status=ConditionStatus.TRUE,
            reason="HostAllocated",
            message=f"placed on {host.name}",
            now=now,
        ),
    )
    new_host = dataclasses.replace(
        apply_host_event(host, HostEvent.ALLOCATE, now=now), assigned_instance=instance.name
    )
    objs: list[Instance | Host | PlacementGroup] = [new_instance, new_host]
    if group is not None:
        objs.append(group.with_member(instance.name, host.rack))
    return objs
