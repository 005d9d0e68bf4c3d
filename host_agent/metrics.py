"""The agent's Prometheus metrics (declared here, incremented elsewhere)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
WIPE_SECONDS = Histogram(
    "bmaas_agent_wipe_seconds",
    "Time to wipe and verify all local disks for one cleaning.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
WIPE_FAILURES = Counter(
    "bmaas_agent_wipe_failures_total",
    "Cleanings whose wipe or read-back verification failed.",
)
