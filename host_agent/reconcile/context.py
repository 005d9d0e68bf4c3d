"""What the reconciler's steps share: the agent's state, its drivers and back-ends.

One ``Context`` per agent.  It owns the things that outlive a single run:
the state file (``save()`` after every change worth surviving a crash), one
power driver per instance (made on first use by the factory), the running
device back-ends keyed by volume or NIC name, the VPC ports and their
fabric, the volume source, the outbox of reports and the provisioning
timeline.  The steps (one module each) are functions of a ``Context``.
A driver that learns by itself that its server changed (a QMP event) calls
``wake``, which runs the reconciler at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from host_agent import metrics
from host_agent.config import AgentConfig
from host_agent.devices import Backend, BlkSpec, DeviceError, NetSpec
from host_agent.power.base import PowerDriver
from host_agent.reconcile.errors import ProvisionFailed
from host_agent.reconcile.fabric import Fabric
from host_agent.reconcile.names import short_id
from host_agent.reconcile.reports import Outbox
from host_agent.reconcile.volumes import GIB, volume_source
from host_agent.reports import Report
from host_agent.state import AgentState
from host_agent.storage.images import ImageCache


class Context:
    def __init__(
        self,
        config: AgentConfig,
        *,
        driver_factory: Callable[[Path], PowerDriver],
        report: Callable[[Report], None],
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self._driver_factory = driver_factory
        self._wake = wake
        self._state_file = config.state_dir / "agent.json"
        self.state = AgentState.load(self._state_file)
        self.images = ImageCache(
            config.image_dir,
            max_bytes=int(config.image_cache_gib * GIB),
            on_evict=lambda _: metrics.IMAGE_CACHE_EVICTIONS.inc(),
        )
        #: where boot disks, data volumes and local disks come from
        self.volumes = volume_source(config, self.images)
        self.outbox = Outbox(report)
        self.drivers: dict[str, PowerDriver] = {}
        self.backends: dict[str, Backend] = {}
        self.fabric = Fabric(config)
        #: per instance, the wall-clock time each provisioning step finished
        #: (provision_start, image_fetched, cloned, devices_started, powered_on)
        self.timeline: dict[str, dict[str, float]] = {}
        #: per instance, the reason its guest is not running (as last reported)
        self.guest_failures: dict[str, str] = {}

    # -- paths ------------------------------------------------------------
    def instance_dir(self, name: str) -> Path:
        return self.config.state_dir / "instances" / short_id(name)

    def socket_path(self, instance: str, device_id: str) -> Path:
        return self.config.run_dir / f"{short_id(instance)[:8]}-{device_id}.sock"

    # -- state --------------------------------------------------------------
    def save(self) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self.state.save(self._state_file)

    def mark(self, name: str, step: str, *, once: bool = False) -> None:
        """Record when *step* of provisioning *name* finished (``timeline``)."""
        steps = self.timeline.setdefault(name, {})
        if not (once and step in steps):
            steps[step] = time.time()

    def driver(self, name: str) -> PowerDriver:
        driver = self.drivers.get(name)
        if driver is None:
            driver = self.drivers[name] = self._driver_factory(self.instance_dir(name))
            driver.on_change = self._wake  # a server that changed by itself: look now
        return driver

    # -- back-ends ----------------------------------------------------------
    async def start_backend(self, spec: BlkSpec | NetSpec) -> Backend:
        """The running back-end for *spec* (adopted, or started now)."""
        backend = self.backends.get(spec.id)
        if backend is None:
            backend = self.backends[spec.id] = Backend(spec)
        started = time.monotonic()
        try:
            if await asyncio.to_thread(backend.ensure):
                metrics.PROVISION_STEP_SECONDS.labels("device_start").observe(
                    time.monotonic() - started
                )
        except DeviceError as exc:
            raise ProvisionFailed(str(exc)) from exc
        return backend

    async def stop_device(self, key: str) -> None:
        """Stop the back-end of volume or NIC *key*; a NIC also leaves the fabric."""
        backend = self.backends.pop(key, None)
        if backend is not None:
            await asyncio.to_thread(backend.stop)
        if self.fabric.remove(key):
            await self.fabric.reconcile()
