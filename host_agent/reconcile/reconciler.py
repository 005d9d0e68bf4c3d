"""The agent's reconciler: desired state in, devices, power and reports out.

Level-triggered, like the control plane's controllers.  ``converge()`` runs
whenever a new ``Desired`` arrives, when a power driver says its server
changed by itself (a guest that panicked), and every ``resync`` seconds
anyway (that is how it notices a server that powered itself off, a
back-end that died, a console that printed something), and each run does
the same thing from scratch, one module per step:

1. **Teardown** (``teardown``) of every instance the agent knows that is no
   longer desired (or is terminating): power off, stop its back-ends,
   delete its boot disk and working files.  Data volumes stay (they belong
   to the tenant).
2. **Cleaning** (``cleaning``), once no instance is left: when the desired
   state asks to clean an epoch not yet wiped, wipe every local disk,
   verify the wipe by reading back, persist and report ``wiped_epoch``.
3. **The bound instance** (``instance``), if any: fetch its image (cached,
   checksum verified), clone the boot disk, create the local disks, start
   one ``offload-blk`` per disk (``provisioning``, disks from the
   ``volumes`` source), one ``offload-net`` per NIC wired into the VPC
   fabric (``nics``), then apply power (``power``).  Power follows the
   action generation (``agent.proto``): the first run powers on (or leaves
   off) as desired; afterwards only a *higher* generation than the one
   acted on changes power (off, on, or a reset for REBOOTING).  Data
   volumes and NICs are hot-plugged and unplugged to match the desired
   lists (``hotplug``), and a volume whose desired size grew is grown on
   disk and its back-end told (the guest sees the new capacity online).
   An instance whose guest failed (a panic, a CPU stopped on an internal
   error) keeps its server when the control plane marks it FAILED: a
   reboot recovers it.
4. **Reports** (``reports``): the observed phase with the generation acted
   on (RUNNING only when the driver says the guest runs; FAILED with its
   reason when it does not), the console tail when it changed, the host's
   wiped epoch.
   Duplicates are suppressed; ``resend()`` (after a reconnect) forgets what
   was sent.

A provisioning error that retrying cannot fix (a bad checksum, an image
that is not a disk) fails the instance with the error as its reason and
tears down what was created; transient errors (the image server is down)
are retried by the next run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from host_agent import metrics
from host_agent.config import AgentConfig
from host_agent.desired import Desired
from host_agent.devices import Backend
from host_agent.power.base import PowerDriver
from host_agent.reconcile import cleaning
from host_agent.reconcile.context import Context
from host_agent.reconcile.instance import converge_instance, keeps_server, report_given_up
from host_agent.reconcile.teardown import teardown
from host_agent.reports import HostReport, Report

log = logging.getLogger("host_agent.reconcile")


class Reconciler:
    def __init__(
        self,
        config: AgentConfig,
        *,
        driver_factory: Callable[[Path], PowerDriver],
        report: Callable[[Report], None],
    ) -> None:
        self.config = config
        self._wake = asyncio.Event()
        self.ctx = Context(
            config, driver_factory=driver_factory, report=report, wake=self._wake.set
        )
        self.state = self.ctx.state
        self.images = self.ctx.images
        self.timeline = self.ctx.timeline
        # the same objects under the names tests and tools have always read
        self._drivers = self.ctx.drivers
        self._ports = self.ctx.fabric.ports
        self.desired: Desired | None = None
        #: the DesiredState.generation of the last fully applied desired state
        self.applied_generation = 0
        self._lock = asyncio.Lock()
        self._last_error = ""

    def instance_dir(self, name: str) -> Path:
        return self.ctx.instance_dir(name)

    def volume_path(self, volume: str) -> Path:
        return self.ctx.volumes.volume_path(volume)

    def backends(self) -> list[Backend]:
        """The device back-ends this agent supervises now."""
        return list(self.ctx.backends.values())

    # -- entry points -----------------------------------------------------
    def set_desired(self, desired: Desired) -> None:
        self.desired = desired
        self._wake.set()

    def resend(self) -> None:
        """Forget what was reported (a new stream): the next run sends it all again."""
        self.ctx.outbox.resend()
        self._wake.set()

    async def run(self) -> None:
        """Converge on every new desired state and every ``resync`` seconds."""
        await self.adopt()
        loop = asyncio.get_running_loop()
        while True:
            # a timer handle, not wait_for's task + timer: cheap enough for
            # thousands of agents in one process (scale tests)
            timer = loop.call_later(self.config.resync, self._wake.set)
            await self._wake.wait()
            timer.cancel()
            self._wake.clear()
            try:
                await self.converge()
                self._last_error = ""
            except Exception as exc:
                metrics.RECONCILE_ERRORS.inc()
                # a traceback once per new problem, not one every resync period
                problem = f"{type(exc).__name__}: {exc}"
                if problem != self._last_error:
                    log.exception("reconcile failed; retrying every %.1fs", self.config.resync)
                    self._last_error = problem

    async def adopt(self) -> None:
        """After a restart: find the servers and back-ends a previous agent left."""
        for name in list(self.state.instances):
            if await self.ctx.driver(name).adopt():
                log.info("adopted the running server of %s", name)

    async def aclose(self) -> None:
        """Let go of drivers without touching the servers (agent shutdown)."""
        for driver in self.ctx.drivers.values():
            await driver.aclose()
        self.ctx.fabric.close()

    async def converge(self) -> None:
        async with self._lock:
            desired = self.desired
            if desired is None:
                return
            started = time.monotonic()
            ctx = self.ctx
            # 1. teardown
            listed = {i.name: i for i in desired.instances}
            for name in list(ctx.state.instances):
                inst = listed.get(name)
                if inst is None:
                    await teardown(ctx, name)
                elif not keeps_server(ctx, inst):
                    await teardown(ctx, name, keep_record=True)
            # 2. cleaning
            if cleaning.due(ctx, desired):
                await cleaning.clean(ctx, desired.cleaning_epoch)
            # 3. the bound instance
            for inst in desired.instances:
                if keeps_server(ctx, inst):
                    await converge_instance(ctx, inst)
                else:
                    report_given_up(ctx, inst)
            # 4. reports
            ctx.outbox.send(HostReport(ctx.state.wiped_epoch))
            self.applied_generation = desired.generation
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
