"""Prometheus metrics of the control plane, declared in one place.

Every metric is a module-level object on the default registry; code elsewhere
only calls ``.inc()``, ``.observe()`` or ``.set()`` on them.  Names carry the
``bmaas_cp_`` prefix, counters end in ``_total``, durations in ``_seconds``,
and label values come from small fixed sets (gRPC method names, status code
names, principal kinds), so cardinality stays bounded.  ``serve()`` starts the
HTTP ``/metrics`` listener that ``bmaas-control-plane --metrics HOST:PORT``
asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

RPC_REQUESTS = Counter(
    "bmaas_cp_rpc_requests_total",
    "gRPC requests handled by the control-plane API, by method and status code.",
    ["service", "method", "code"],
)
RPC_DURATION = Histogram(
    "bmaas_cp_rpc_duration_seconds",
    "Time spent handling a unary gRPC request, by method.",
    ["service", "method"],
    buckets=_LATENCY_BUCKETS,
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


def serve(host: str, port: int) -> None:
    """Expose the default registry at ``http://HOST:PORT/metrics`` (daemon thread)."""
    start_http_server(port, addr=host)
