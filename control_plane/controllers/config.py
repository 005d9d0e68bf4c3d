"""Controller settings (one frozen dataclass, passed down from the manager)."""

from __future__ import annotations

from dataclasses import dataclass, field

from control_plane.domain.storage import StorageConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerConfig:
    #: leader lease TTL (seconds); a dead leader is replaced within about this long
    lease_ttl: int = 5
    election: str = "controllers"
    #: concurrent reconciles per controller
    workers: int = 16
    #: global rate limit per controller queue (reconciles/s, burst)
    rate: float = 5000.0
    burst: int = 500
    base_backoff: float = 0.05
    max_backoff: float = 30.0
    #: level-triggered safety net: relist and requeue every so often
    resync_period: float = 30.0
    #: how long a PENDING instance waits before retrying when nothing fits
    no_capacity_retry: float = 2.0
    #: a PENDING instance younger than this is left to the API replica that
    #: created it (it places synchronously); the controller only picks up
    #: instances whose creator crashed or gave up.  0 = schedule at once.
    pending_grace: float = 2.0
    #: the scheduler's host cache also follows heartbeat leases
    track_liveness: bool = True
    #: etcd housekeeping (``housekeeping.Housekeeper``): seconds between passes,
    #: how much history (seconds) stays for watches to resume from, and how many
    #: etcd members to defragment when recovering from NOSPACE
    compaction_interval: float = 300.0
    compaction_retention: float = 600.0
    etcd_members: int = 1
    #: etcd's ``--quota-backend-bytes`` (its default: 2 GiB)
    etcd_quota_bytes: int = 2 << 30
    #: the region's storage back-end; ``rbd`` adds the storage controller
    storage: StorageConfig = field(default_factory=StorageConfig)
