"""Step 1, teardown: remove what the agent created for an instance.

An instance the desired state no longer lists is torn down and forgotten;
one it lists but that wants no server (terminating, or failed while
provisioning; not one whose guest failed, see ``instance.keeps_server``)
is torn down and its record kept (a failed one keeps reporting its
reason).  Teardown powers the server off without grace,
stops every back-end whose socket belongs to the instance (also those a
previous agent process started and this one never adopted), deletes the
boot disk and the instance's working directory.  Data volumes stay: they
belong to the tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil

from host_agent import metrics
from host_agent.devices import stop_leftovers
from host_agent.reconcile.context import Context
from host_agent.reconcile.names import socket_prefix

log = logging.getLogger("host_agent.reconcile")


async def teardown(ctx: Context, name: str, *, keep_record: bool = False) -> None:
    """Remove everything this agent created for *name* (data volumes stay)."""
    driver = ctx.driver(name)
    await driver.power_off(grace=0.0)
    await driver.aclose()
    prefix = socket_prefix(name)
    for key, backend in list(ctx.backends.items()):
        if backend.spec.socket.name.startswith(prefix):
            await ctx.stop_device(key)
    # back-ends of a previous agent process this one never adopted
    await asyncio.to_thread(stop_leftovers, ctx.config.run_dir, prefix)
    ctx.volumes.delete_boot_disk(name)
    shutil.rmtree(ctx.instance_dir(name), ignore_errors=True)
    ctx.drivers.pop(name, None)
    if not keep_record:
        ctx.state.instances.pop(name, None)
        ctx.outbox.forget(name)
        ctx.timeline.pop(name, None)
        ctx.guest_failures.pop(name, None)
        ctx.save()
        with contextlib.suppress(KeyError):
            metrics.POWER_STATE.remove(name.rsplit("/", 1)[-1])
        log.info("tore down %s", name)
