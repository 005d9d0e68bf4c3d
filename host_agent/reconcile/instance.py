"""Step 3, the bound instance: provision, wire, power, plug, observe.

In order: the instance's record is created on first sight (a record that
says provisioning failed for good only repeats its reason); the disks are
provisioned (``provisioning``) and the NICs served and wired into the VPC
fabric (``nics``); volumes and NICs no longer desired are unplugged
(``hotplug``); a server that is off gets exactly what is desired now; power
is applied by generation (``power``); new volumes and NICs are hot-plugged;
and what is observed is reported: the phase with the generation acted on
and the console tail when it changed.  The phase is RUNNING only when the
server is on and the driver says its guest runs (``PowerDriver.health``);
a guest that panicked or whose CPU stopped is FAILED with the driver's
reason, and such an instance keeps its server when the control plane marks
it FAILED (``keeps_server``), so a reboot (a reset) recovers it.

A ``ProvisionFailed`` from provisioning or the NICs fails the instance with
its message as the reason, persisted so it is never retried, and tears
down what was created.  A power action that fails ends the run, and the
next run tries again.
"""

from __future__ import annotations

import logging

from host_agent import metrics
from host_agent.desired import DesiredInstance, Phase, Power
from host_agent.power.base import Machine, PowerDriver
from host_agent.reconcile.context import Context
from host_agent.reconcile.errors import ProvisionFailed
from host_agent.reconcile.hotplug import plug_new, pluggable, unplug_removed
from host_agent.reconcile.nics import nics as serve_nics
from host_agent.reconcile.power import apply_power
from host_agent.reconcile.provisioning import provision
from host_agent.reconcile.teardown import teardown
from host_agent.reports import ConsoleReport, InstanceReport
from host_agent.state import InstanceRecord

log = logging.getLogger("host_agent.reconcile")

CONSOLE_TAIL = 64 * 1024


async def converge_instance(ctx: Context, inst: DesiredInstance) -> None:
    rec = ctx.state.instances.get(inst.name)
    if rec is None:
        rec = ctx.state.instances[inst.name] = InstanceRecord(name=inst.name)
        ctx.save()
    if rec.failed:
        ctx.outbox.send(InstanceReport(inst.name, Phase.FAILED, inst.generation, rec.failed))
        return
    driver = ctx.driver(inst.name)
    if rec.generation < 0:
        ctx.mark(inst.name, "provision_start", once=True)
        ctx.outbox.send(InstanceReport(inst.name, Phase.PROVISIONING, inst.generation))
    try:
        disks = await provision(ctx, inst)
        nics = await serve_nics(ctx, inst)
    except ProvisionFailed as exc:
        await _fail(ctx, inst, rec, str(exc) or "provisioning failed")
        return
    await unplug_removed(ctx, rec, driver, disks, nics)
    if await driver.state() == Power.OFF:
        # a server powers on with exactly what is desired now
        rec.attached = [v for v, d in disks.items() if pluggable(v, d)]
        rec.nics = list(nics)
        ctx.save()
    machine = Machine(
        name=inst.id,
        cpus=ctx.config.server_cpus,
        memory_mib=ctx.config.server_memory_mib,
        disks=tuple(d for v, d in disks.items() if not pluggable(v, d) or v in rec.attached),
        nics=tuple(nics[n] for n in rec.nics if n in nics),
    )
    await apply_power(ctx, inst, rec, driver, machine)
    await plug_new(ctx, rec, driver, disks, nics)
    await report_observed(ctx, inst, rec, driver)


async def report_observed(
    ctx: Context, inst: DesiredInstance, rec: InstanceRecord, driver: PowerDriver
) -> None:
    """RUNNING only when the server is on *and* its guest runs; a guest that
    panicked or stopped on an internal error, or a server that died under
    it, is FAILED with the reason; a server that powered off is STOPPED."""
    power = await driver.state()
    metrics.POWER_STATE.labels(inst.id).set(1 if power == Power.ON else 0)
    health = await driver.health()
    generation = max(rec.generation, 0)
    if not health.ok:
        if ctx.guest_failures.get(inst.name) != health.reason:
            log.warning("%s: %s", inst.name, health.reason)
            metrics.GUEST_FAILURES.inc()
        ctx.guest_failures[inst.name] = health.reason
        ctx.outbox.send(InstanceReport(inst.name, Phase.FAILED, generation, health.reason))
    else:
        ctx.guest_failures.pop(inst.name, None)
        phase = Phase.RUNNING if power == Power.ON else Phase.STOPPED
        ctx.outbox.send(InstanceReport(inst.name, phase, generation))
    tail = driver.console_tail(CONSOLE_TAIL)
    if tail:
        ctx.outbox.send(ConsoleReport(inst.name, tail))


def keeps_server(ctx: Context, inst: DesiredInstance) -> bool:
    """Whether *inst* keeps its server on this host: every instance that wants
    one, and a FAILED one whose *guest* failed (not its provisioning): its
    disks hold the tenant's data, its console says what happened, and a
    reboot brings it back."""
    if inst.wants_server:
        return True
    rec = ctx.state.instances.get(inst.name)
    return inst.state == "FAILED" and not inst.terminate and rec is not None and not rec.failed


def report_given_up(ctx: Context, inst: DesiredInstance) -> None:
    """An instance the control plane gave up on keeps reporting why it failed."""
    rec = ctx.state.instances.get(inst.name)
    if rec is not None and rec.failed:
        ctx.outbox.send(InstanceReport(inst.name, Phase.FAILED, inst.generation, rec.failed))


async def _fail(ctx: Context, inst: DesiredInstance, rec: InstanceRecord, reason: str) -> None:
    rec.failed = reason
    ctx.save()
    log.warning("%s failed: %s", inst.name, rec.failed)
    await teardown(ctx, inst.name, keep_record=True)
    ctx.outbox.send(InstanceReport(inst.name, Phase.FAILED, inst.generation, rec.failed))
