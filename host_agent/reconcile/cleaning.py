"""Step 2, cleaning: wipe the host's local disks for a new cleaning epoch.

Runs only when the desired state asks to clean, no instance is desired and
none is left on the host.  Every local disk is wiped and the wipe verified
by reading back (``host_agent.storage.wipe``); then the epoch is persisted,
and the next host report carries it as ``wiped_epoch`` (only that report
moves the host from CLEANING to AVAILABLE).  A failed wipe is reported with
its reason and retried by the next run; an epoch already wiped is not
wiped again.
"""

from __future__ import annotations

import asyncio
import logging
import time

from host_agent import metrics
from host_agent.desired import Desired
from host_agent.reconcile.context import Context
from host_agent.reports import HostReport
from host_agent.storage.errors import StorageError
from host_agent.storage.wipe import wipe_disk

log = logging.getLogger("host_agent.reconcile")


def due(ctx: Context, desired: Desired) -> bool:
    """Cleaning is asked for and nothing is (or is about to be) on the host."""
    return desired.clean and not ctx.state.instances and not desired.instances


async def clean(ctx: Context, epoch: int) -> None:
    if epoch <= ctx.state.wiped_epoch:
        return
    started = time.monotonic()
    for disk in ctx.config.local_disks:
        path = ctx.volumes.local_disk_path(disk.name)
        if path.exists():
            try:
                result = await asyncio.to_thread(wipe_disk, path)
            except StorageError as exc:
                metrics.WIPE_FAILURES.inc()
                ctx.outbox.send(
                    HostReport(ctx.state.wiped_epoch, f"wipe of {disk.name} failed: {exc}")
                )
                raise
            log.info("wiped %s: %s", disk.name, result)
    ctx.state.wiped_epoch = epoch
    ctx.save()
    metrics.WIPE_SECONDS.observe(time.monotonic() - started)
    log.info("cleaning epoch %d done in %.2fs", epoch, time.monotonic() - started)
