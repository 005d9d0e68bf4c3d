"""``ControllerManager``: leader election around the controllers.

Every control-plane replica starts one manager.  All of them campaign
(``LeaderElector``); the leader builds a ``HostCache`` (list + watch), a
``Scheduler``, the instance, host and liveness controllers (and the
storage and failover controllers with ``[storage] backend = "rbd"``) and etcd's
housekeeping (compaction, NOSPACE recovery), and runs them
until it stops or loses its lease; then it tears them all down (nothing is
kept across terms: a new term starts from a fresh list, which is what makes
a handover safe).  Followers run nothing but the election.

Usage (E's ``main``)::

    async with ControllerManager(store, config=ControllerConfig(lease_ttl=5)) as mgr:
        ...                      # mgr.is_leader, await mgr.wait_leader(), mgr.scheduler

Pass ``scheduler=`` (a ``Scheduler`` whose ``HostCache`` the caller has
started and will close) to share the API's scheduler: one host watch per
process instead of two, and API and controller placements then skip each
other's in-flight hosts instead of racing for them.  ``cache=`` alone (a
started ``HostCache``) keeps one host cache but gives the controllers their
own ``Scheduler`` over it.  A shared cache is kept across leadership terms
(its list + watch is the caller's); only a cache the manager made itself is
rebuilt per term.  ``control_plane.main`` passes the API's scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from types import TracebackType

from control_plane.controllers.base import Controller
from control_plane.controllers.config import ControllerConfig
from control_plane.controllers.failover_controller import FailoverController
from control_plane.controllers.host_controller import HostController
from control_plane.controllers.housekeeping import Housekeeper
from control_plane.controllers.instance_controller import InstanceController
from control_plane.controllers.leader import LeaderElector
from control_plane.controllers.liveness_controller import LivenessController
from control_plane.controllers.storage_controller import StorageController
from control_plane.scheduler import HostCache, Scheduler
from control_plane.storage import CephAdmin
from control_plane.store import Store

log = logging.getLogger(__name__)


class ControllerManager:
    def __init__(
        self,
        store: Store,
        *,
        identity: str | None = None,
        config: ControllerConfig | None = None,
        scheduler: Scheduler | None = None,
        cache: HostCache | None = None,
    ) -> None:
        if scheduler is not None and cache is not None and scheduler.cache is not cache:
            raise ValueError("scheduler= and cache= must share one HostCache")
        self.store = store
        #: a scheduler (and its started HostCache) shared with the API of the
        #: same process: one host watch instead of two, and API and controller
        #: placements see each other's in-flight binds
        self.shared_scheduler = scheduler
        self.shared_cache = scheduler.cache if scheduler is not None else cache
        self.config = config or ControllerConfig()
        self.elector = LeaderElector(
            store, election=self.config.election, identity=identity, ttl=self.config.lease_ttl
        )
        self.cache: HostCache | None = None
        self.scheduler: Scheduler | None = None
        self.controllers: list[Controller] = []
        self._running = asyncio.Event()

    @property
    def identity(self) -> str:
        return self.elector.identity

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader

    async def wait_leader(self) -> None:
        await self.elector.elected.wait()

    async def wait_running(self) -> None:
        """Until this replica leads and its controllers have started."""
        await self._running.wait()

    async def start(self) -> None:
        self.elector.start(self._lead)

    async def stop(self) -> None:
        await self.elector.aclose()

    async def __aenter__(self) -> ControllerManager:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _lead(self) -> None:
        cfg = self.config
        own_cache = self.shared_cache is None
        # ``is None``, not ``or``: an empty HostCache is falsy (``__len__``), and a
        # shared one that holds no host yet must still be the one used
        cache = self.shared_cache
        if cache is None:
            cache = HostCache(self.store, track_liveness=cfg.track_liveness)
        scheduler = self.shared_scheduler or Scheduler(self.store, cache, rng=random.Random())
        controllers: list[Controller] = [
            InstanceController(self.store, cfg, scheduler),
            HostController(self.store, cfg),
            LivenessController(self.store, cfg),
        ]
        if cfg.storage.rbd:
            admin = CephAdmin(
                pool=cfg.storage.pool, conf=cfg.storage.ceph_conf, client_id=cfg.storage.client_id
            )
            controllers.append(StorageController(self.store, cfg, admin))
            controllers.append(FailoverController(self.store, cfg, admin))
        housekeeper = Housekeeper(
            self.store,
            interval=cfg.compaction_interval,
            retention=cfg.compaction_retention,
            members=cfg.etcd_members,
            quota_bytes=cfg.etcd_quota_bytes,
        )
        try:
            if own_cache:
                await cache.start()
            for ctl in controllers:
                await ctl.start()
            await housekeeper.start()
            self.cache, self.scheduler, self.controllers = cache, scheduler, controllers
            self._running.set()
            log.info("%s: controllers running", self.identity)
            await asyncio.Event().wait()  # until cancelled by the elector
        finally:
            self._running.clear()
            self.cache, self.scheduler, self.controllers = None, None, []
            await housekeeper.aclose()
            for ctl in reversed(controllers):
                with contextlib.suppress(Exception):
                    await ctl.aclose()
            if own_cache:
                await cache.aclose()
