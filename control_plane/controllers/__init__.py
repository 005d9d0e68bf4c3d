"""Level-triggered reconcilers: a keyed work queue with per-key backoff and a
global rate limit, periodic resync, and leader election on an etcd lease.

Public API::

    mgr = ControllerManager(store, identity="cp-1", config=ControllerConfig(lease_ttl=5),
                            scheduler=api_scheduler)   # or cache=host_cache: one per replica
    async with mgr:                 # or: await mgr.start() ... await mgr.stop()
        await mgr.wait_leader()     # mgr.is_leader; mgr.scheduler while leading

Modules, one concern each: ``outcome`` (Done / Transient / Permanent),
``ratelimit`` (token bucket), ``workqueue`` (WorkQueue), ``base``
(Controller skeleton), ``instance_controller``, ``host_controller``,
``liveness_controller``, ``leader`` (LeaderElector), ``config``
(ControllerConfig), ``manager`` (ControllerManager).
"""

from control_plane.controllers.config import ControllerConfig
from control_plane.controllers.leader import LeaderElector
from control_plane.controllers.manager import ControllerManager
from control_plane.controllers.outcome import Done, Outcome, Permanent, Transient
from control_plane.controllers.workqueue import WorkQueue

__all__ = [
    "ControllerConfig",
    "ControllerManager",
    "Done",
    "LeaderElector",
    "Outcome",
    "Permanent",
    "Transient",
    "WorkQueue",
]
