"""The agent's Prometheus metrics (declared here, incremented elsewhere).

Per-device metrics come from the back-end processes: each ``offload-blk``
writes its counters to a stats file every second, and ``DeviceCollector``
turns the files of the devices the agent supervises into metrics at scrape
time (with the back-end's CPU time from ``/proc``), so the data path never
shares memory or a lock with the management plane.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from host_agent.devices import Backend

CONNECTED = Gauge(
    "bmaas_agent_connected",
    "1 while the agent holds an AgentService.Connect stream to a control-plane replica.",
)
RECONNECTS = Counter(
    "bmaas_agent_reconnects_total",
    "Connect streams that ended and were retried (control plane gone, network error).",
)
RECONCILE_ERRORS = Counter(
    "bmaas_agent_reconcile_errors_total",
    "Reconcile passes that raised (retried on the next pass).",
)
RECONCILE_SECONDS = Histogram(
    "bmaas_agent_reconcile_seconds",
    "Duration of one reconcile pass.",
    buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 1, 2, 5, 10, 30),
)
PROVISION_STEP_SECONDS = Histogram(
    "bmaas_agent_provision_step_seconds",
    "Time spent in each provisioning step.",
    ["step"],
    buckets=(0.005, 0.02, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
PROVISION_ERRORS = Counter(
    "bmaas_agent_provision_errors_total",
    "Provisioning failures that failed an instance, by step.",
    ["step"],
)
GUEST_FAILURES = Counter(
    "bmaas_agent_guest_failures_total",
    "Guests found not running when they should (panicked, CPU stopped, the server died).",
)
POWER_STATE = Gauge(
    "bmaas_agent_power_on",
    "1 while the server of the instance is powered on, 0 when off.",
    ["instance"],
)
BACKEND_RESTARTS = Counter(
    "bmaas_agent_backend_restarts_total",
    "Device back-ends found dead and started again.",
)
VOLUME_RESIZES = Counter(
    "bmaas_agent_volume_resizes_total",
    "Online volume resizes passed to a running back-end.",
)
IMAGE_CACHE_EVICTIONS = Counter(
    "bmaas_agent_image_cache_evictions_total",
    "Cached boot images deleted to keep the cache within image_cache_gib.",
)
WIPE_SECONDS = Histogram(
    "bmaas_agent_wipe_seconds",
    "Time to wipe and verify all local disks for one cleaning.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
WIPE_FAILURES = Counter(
    "bmaas_agent_wipe_failures_total",
    "Cleanings whose wipe or read-back verification failed.",
)


class DeviceCollector(Collector):
    """Per-device I/O, connection state and data-plane CPU, read at scrape time."""

    def __init__(self, backends: Callable[[], Iterable[Backend]]) -> None:
        self._backends = backends

    def collect(self) -> Iterator[Metric]:
        labels = ["device", "volume"]
        requests = CounterMetricFamily(
            "bmaas_agent_device_requests",
            "virtio-blk requests served by the card, by device and request type.",
            labels=[*labels, "op"],
        )
        io_bytes = CounterMetricFamily(
            "bmaas_agent_device_io_bytes",
            "Bytes moved between guest memory and the volume, by direction.",
            labels=[*labels, "direction"],
        )
        errors = CounterMetricFamily(
            "bmaas_agent_device_errors",
            "Requests completed with an error or malformed rings, by kind.",
            labels=[*labels, "kind"],
        )
        latency = HistogramMetricFamily(
            "bmaas_agent_device_request_seconds",
            "Service time of a request in the back-end (parse to completion).",
            labels=labels,
        )
        connected = GaugeMetricFamily(
            "bmaas_agent_device_connected",
            "1 while the server's vhost-user front-end is connected to the back-end.",
            labels=labels,
        )
        cpu = CounterMetricFamily(
            "bmaas_agent_dataplane_cpu_seconds",
            "CPU time (user + system) spent by the device's back-end process.",
            labels=labels,
        )
        nic_frames = CounterMetricFamily(
            "bmaas_agent_nic_frames",
            "Frames through a NIC: tx (guest to the VPC), rx (VPC to the guest).",
            labels=["device", "nic", "direction"],
        )
        nic_bytes = CounterMetricFamily(
            "bmaas_agent_nic_bytes",
            "Bytes through a NIC, by direction.",
            labels=["device", "nic", "direction"],
        )
        nic_verdicts = CounterMetricFamily(
            "bmaas_agent_nic_card_verdicts",
            "What the card did with guest frames: forwarded, consumed (DHCP, ARP, metadata "
            "answered by the card), dropped_spoofed, dropped_malformed, dropped_policy.",
            labels=["device", "nic", "verdict"],
        )
        nic_drops = CounterMetricFamily(
            "bmaas_agent_nic_card_drops",
            "Guest frames the card dropped, by reason (src_mac, ipv4_src, ipv6_src, ndp_target, "
            "ndp_lladdr, ndp_router, ipv6_disabled, ethertype, vlan, dhcp_server, ...).",
            labels=["device", "nic", "reason"],
        )
        nic_routed = CounterMetricFamily(
            "bmaas_agent_nic_card_routed",
            "Guest frames the card routed to another subnet of the VPC (counted as forwarded "
            "too; no_route and ttl_expired drops are in bmaas_agent_nic_card_drops).",
            labels=["device", "nic"],
        )
        metadata_refused = CounterMetricFamily(
            "bmaas_agent_nic_metadata_unauthorized",
            "Metadata requests answered 401 (no valid IMDSv2 session token).",
            labels=["device", "nic"],
        )
        for backend in self._backends():
            values = [backend.spec.serial or backend.spec.id, backend.spec.id]
            stats = backend.stats()
            cpu.add_metric(values, backend.cpu_seconds())
            if not stats:
                continue
            connected.add_metric(values, 1.0 if stats.get("connected") else 0.0)
            if "tx_frames" in stats:  # a NIC
                for direction in ("tx", "rx"):
                    nic_frames.add_metric([*values, direction], stats[f"{direction}_frames"])
                    nic_bytes.add_metric([*values, direction], stats[f"{direction}_bytes"])
                for verdict, n in sorted(stats.get("services", {}).items()):
                    if verdict not in ("replies", "routed"):
                        nic_verdicts.add_metric([*values, verdict], n)
                nic_routed.add_metric(values, stats.get("services", {}).get("routed", 0))
                for reason, n in sorted(stats.get("drops", {}).items()):
                    nic_drops.add_metric([*values, reason], n)
                if "metadata" in stats:
                    metadata_refused.add_metric(values, stats["metadata"].get("unauthorized", 0))
                continue
            for op, n in sorted(stats.get("requests", {}).items()):
                requests.add_metric([*values, op], n)
            io_bytes.add_metric([*values, "read"], stats.get("read_bytes", 0))
            io_bytes.add_metric([*values, "write"], stats.get("write_bytes", 0))
            for kind, n in sorted(stats.get("errors", {}).items()):
                errors.add_metric([*values, kind], n)
            bounds = stats.get("latency_bounds_ns", [])
            counts = stats.get("latency_buckets", [])
            if bounds and len(counts) == len(bounds) + 1:
                running = 0
                buckets = []
                for bound, n in zip([*bounds, None], counts, strict=True):
                    running += n
                    edge = "+Inf" if bound is None else repr(bound / 1e9)
                    buckets.append((edge, running))
                latency.add_metric(values, buckets, stats.get("latency_ns_sum", 0) / 1e9)
        yield from (requests, io_bytes, errors, latency, connected, cpu)
        yield from (nic_frames, nic_bytes, nic_verdicts, nic_drops, nic_routed, metadata_refused)
