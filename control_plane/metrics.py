"""Prometheus metrics of the control plane, declared in one place.

Every metric is a module-level object on the default registry; code elsewhere
only calls ``.inc()``, ``.observe()`` or ``.set()`` on them.  Names carry the
``bmaas_cp_`` prefix, counters end in ``_total``, durations in ``_seconds``,
and label values come from small fixed sets (gRPC method names, status code
names, principal kinds, etcd operations, controller names, lifecycle
states), so cardinality stays bounded.  ``serve()`` starts the HTTP
``/metrics`` listener that ``bmaas-control-plane --metrics HOST:PORT`` asks
for.

Three collectors read state at scrape time instead of being pushed to:

- ``track_etcd_round_trips``: the store's own round-trip counters;
- ``track_controllers``: the leader seat and the work queues of the running
  controllers (depth is read from the queues, never mirrored into a gauge);
- ``Census``: hosts and instances by state.  Counting is the leader's job
  (followers export no samples, so ``sum`` over replicas is the region's
  count): every ``interval`` seconds it reads the hosts from the replica's
  host cache (no etcd round trip) and lists the instances once (one paged
  Range); a scrape only reads the last snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from control_plane.domain.compute import Instance
from control_plane.domain.errors import BmaasError
from control_plane.domain.lifecycle import INSTANCE_TRANSIENT, HostState, InstanceState

if TYPE_CHECKING:
    from control_plane.domain.host import Host


class InstanceLister(Protocol):
    """What the census reads (a ``control_plane.store.Store``)."""

    async def list_all(self, cls: type[Instance]) -> tuple[list[Instance], int]: ...


log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

RPC_REQUESTS = Counter(
    "bmaas_cp_rpc_requests_total",
    "gRPC requests handled by the control-plane API, by method and status code.",
    ["service", "method", "code"],
)
RPC_DURATION = Histogram(
    "bmaas_cp_rpc_duration_seconds",
    "Time spent handling a unary gRPC request, by method and status code.",
    ["service", "method", "code"],
    buckets=_LATENCY_BUCKETS,
)
SCHEDULING_DURATION = Histogram(
    "bmaas_cp_scheduling_duration_seconds",
    "Time to place one instance on a host (ranking, binding txn and lost races "
    "included), by result: placed, no_capacity, conflict, replayed, error.",
    ["result"],
    buckets=_LATENCY_BUCKETS,
)
ETCD_DURATION = Histogram(
    "bmaas_cp_etcd_request_duration_seconds",
    "Round-trip time of one etcd RPC made by the store, by etcd operation (failed calls included).",
    ["op"],
    buckets=(0.0005, *_LATENCY_BUCKETS),
)
ETCD_COMPACTED_REVISION = Gauge(
    "bmaas_cp_etcd_compacted_revision",
    "The revision up to which the controllers' leader last compacted etcd's history.",
)
ETCD_SPACE_RECOVERIES = Counter(
    "bmaas_cp_etcd_space_recoveries_total",
    "NOSPACE alarms the controllers' leader cleared by compacting and defragmenting etcd.",
)
FAILOVERS = Counter(
    "bmaas_cp_failovers_total",
    "Instances moved off a host that stayed unreachable past the failover grace "
    "(fenced, unbound and placed again).",
)
FENCED_CLIENTS = Counter(
    "bmaas_cp_fenced_clients_total",
    "Ceph clients (cards) put on the OSD blocklist before their disks moved to another host.",
)
CONTROLLER_RECONCILE_DURATION = Histogram(
    "bmaas_cp_controller_reconcile_duration_seconds",
    "Time spent in one reconcile pass of a key, by controller.",
    ["controller"],
    buckets=_LATENCY_BUCKETS,
)
CONTROLLER_RETRIES = Counter(
    "bmaas_cp_controller_retries_total",
    "Keys requeued with a delay after a Transient outcome or a failed pass, by controller.",
    ["controller"],
)
CONTROLLER_ERRORS = Counter(
    "bmaas_cp_controller_reconcile_errors_total",
    "Reconcile passes that raised (the key is retried with backoff), by controller.",
    ["controller"],
)
CONTROLLER_PERMANENT = Counter(
    "bmaas_cp_controller_permanent_failures_total",
    "Keys dropped after a Permanent outcome (a condition records why), by controller.",
    ["controller"],
)
AUTH_FAILURES = Counter(
    "bmaas_cp_auth_failures_total",
    "Requests rejected by authentication, by expected principal kind.",
    ["kind"],
)
INSTANCES_CREATED = Counter(
    "bmaas_cp_instances_created_total",
    "Instances accepted by CreateInstance (retries with a known request_id excluded).",
)
PLACEMENT_FAILURES = Counter(
    "bmaas_cp_placement_failures_total",
    "CreateInstance calls refused because no matching host or quota was left, by reason.",
    ["reason"],
)
AGENT_STREAMS = Gauge(
    "bmaas_cp_agent_streams",
    "AgentService.Connect streams currently open on this replica.",
)
AGENT_MESSAGES = Counter(
    "bmaas_cp_agent_messages_total",
    "Messages received from host agents, by kind.",
    ["kind"],
)
AGENT_STALE_MESSAGES = Counter(
    "bmaas_cp_agent_stale_messages_total",
    "Instance statuses and console tails dropped because the instance is no longer "
    "bound to the agent's host (it was just terminated).",
)
DESIRED_STATE_PUSHES = Counter(
    "bmaas_cp_desired_state_pushes_total",
    "DesiredState messages sent down agent streams.",
)


class _EtcdRoundTrips(Collector):
    """Exposes the store's own round-trip counters (read at scrape time)."""

    def __init__(self, read: Callable[[], Mapping[str, int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "bmaas_cp_etcd_round_trips",
            "etcd RPCs made by this replica's store, by etcd operation (Range, Txn, ...).",
            labels=["op"],
        )
        for op, count in sorted(self._read().items()):
            family.add_metric([op], count)
        yield family


_round_trips: _EtcdRoundTrips | None = None


def track_etcd_round_trips(read: Callable[[], Mapping[str, int]]) -> None:
    """Publish ``bmaas_cp_etcd_round_trips_total{op}`` from *read* (one store per process)."""
    global _round_trips
    if _round_trips is not None:
        REGISTRY.unregister(_round_trips)
    _round_trips = _EtcdRoundTrips(read)
    REGISTRY.register(_round_trips)


class _Queue(Protocol):
    def __len__(self) -> int: ...
    @property
    def pending(self) -> int: ...


class _Controller(Protocol):
    name: str

    @property
    def queue(self) -> _Queue: ...


class _Elector(Protocol):
    is_leader: bool
    terms: int


class _Manager(Protocol):
    """What ``ControllerManager`` offers to the collector (typed here to avoid a cycle)."""

    @property
    def elector(self) -> _Elector: ...

    @property
    def controllers(self) -> Sequence[_Controller]: ...


class _Controllers(Collector):
    """The leader seat and the running controllers' queues (read at scrape time)."""

    def __init__(self, manager: _Manager) -> None:
        self._manager = manager

    def collect(self) -> Iterator[Metric]:
        elector = self._manager.elector
        leader = GaugeMetricFamily(
            "bmaas_cp_leader",
            "1 while this replica holds the controllers' leader lease, else 0.",
        )
        leader.add_metric([], 1.0 if elector.is_leader else 0.0)
        terms = CounterMetricFamily(
            "bmaas_cp_leader_terms",
            "Leadership terms this replica has won since it started (churn shows here).",
        )
        terms.add_metric([], elector.terms)
        depth = GaugeMetricFamily(
            "bmaas_cp_controller_queue_depth",
            "Keys waiting in a controller's work queue for a worker (leader only).",
            labels=["controller"],
        )
        pending = GaugeMetricFamily(
            "bmaas_cp_controller_queue_pending",
            "Keys queued, in flight or waiting on a retry timer, by controller (leader only).",
            labels=["controller"],
        )
        for ctl in list(self._manager.controllers):
            depth.add_metric([ctl.name], len(ctl.queue))
            pending.add_metric([ctl.name], ctl.queue.pending)
        yield from (leader, terms, depth, pending)


_controllers: _Controllers | None = None


def track_controllers(manager: _Manager) -> None:
    """Publish the leader gauges and queue depths of *manager* (one per process)."""
    global _controllers
    if _controllers is not None:
        REGISTRY.unregister(_controllers)
    _controllers = _Controllers(manager)
    REGISTRY.register(_controllers)


class Census(Collector):
    """Hosts and instances by state, counted by the leader (see the module docstring).

    ``hosts()`` returns the host cache's hosts, or None when this replica
    does not lead (then nothing is counted or exported).  The age of the
    least recently written instance in each transient state feeds the
    "instance stuck" alert; ``update_time`` is the instance's last write.
    """

    def __init__(
        self,
        store: InstanceLister,
        hosts: Callable[[], Iterable[Host] | None],
        *,
        interval: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._hosts = hosts
        self.interval = interval
        self._clock = clock
        #: (hosts by state, instances by state, oldest age by transient state)
        self.snapshot: tuple[dict[str, int], dict[str, int], dict[str, float]] | None = None

    async def count(self) -> None:
        """Take one snapshot now (or drop it if this replica does not lead)."""
        hosts = self._hosts()
        if hosts is None:
            self.snapshot = None
            return
        by_host_state = Tally(str(h.state) for h in hosts)
        instances, _ = await self._store.list_all(Instance)
        now = self._clock()
        by_state: Tally[str] = Tally()
        oldest: dict[str, float] = {}
        for inst in instances:
            state = str(inst.state)
            by_state[state] += 1
            if inst.state in INSTANCE_TRANSIENT:
                oldest[state] = max(oldest.get(state, 0.0), now - inst.update_time)
        self.snapshot = (dict(by_host_state), dict(by_state), oldest)

    async def run(self) -> None:
        """``count()`` every ``interval`` seconds until cancelled."""
        while True:
            try:
                await self.count()
            except BmaasError as exc:  # etcd unreachable: keep the last snapshot
                log.warning("census: %s", exc)
            except Exception:  # a bug here must not end the counting
                log.exception("census failed")
                self.snapshot = None
            await asyncio.sleep(self.interval)

    def collect(self) -> Iterator[Metric]:
        hosts = GaugeMetricFamily(
            "bmaas_cp_hosts",
            "Hosts by lifecycle state (exported by the leader replica only).",
            labels=["state"],
        )
        instances = GaugeMetricFamily(
            "bmaas_cp_instances",
            "Instances by lifecycle state, TERMINATED included until deleted "
            "(exported by the leader replica only).",
            labels=["state"],
        )
        oldest = GaugeMetricFamily(
            "bmaas_cp_instance_oldest_transient_seconds",
            "Seconds since the least recently written instance in each transient "
            "state was last written (leader only; 0 when none is in that state).",
            labels=["state"],
        )
        snap = self.snapshot
        if snap is not None:
            by_host, by_inst, ages = snap
            for h_state in HostState:
                hosts.add_metric([h_state.value], by_host.get(h_state.value, 0))
            for i_state in InstanceState:
                instances.add_metric([i_state.value], by_inst.get(i_state.value, 0))
            for t_state in sorted(INSTANCE_TRANSIENT):
                oldest.add_metric([t_state.value], round(ages.get(t_state.value, 0.0), 3))
        yield from (hosts, instances, oldest)


_census: Census | None = None


def track_census(census: Census) -> None:
    """Register *census* (one per process; a later one replaces it)."""
    global _census
    if _census is not None:
        REGISTRY.unregister(_census)
    _census = census
    REGISTRY.register(census)


def serve(host: str, port: int) -> None:
    """Expose the default registry at ``http://HOST:PORT/metrics`` (daemon thread)."""
    start_http_server(port, addr=host)
