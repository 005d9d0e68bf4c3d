"""Step 3d, power: act on the instance's action generation, once.

Power follows the action generation (``agent.proto``): the first run powers
on (or leaves off) as desired; afterwards only a *higher* generation than
the one acted on changes power: off, on, or a reset for REBOOTING (a
server that is off is powered on instead).  With an unchanged generation
nothing about power changes, so a server that powered itself off stays
off.  The generation acted on is persisted before the next report, so a
restarted agent never acts twice on one request.
"""

from __future__ import annotations

from host_agent import metrics
from host_agent.desired import DesiredInstance, Phase, Power
from host_agent.power.base import Machine, PowerDriver, PowerError
from host_agent.reconcile.context import Context
from host_agent.reconcile.errors import ProvisionFailed
from host_agent.reports import InstanceReport
from host_agent.state import InstanceRecord


async def apply_power(
    ctx: Context, inst: DesiredInstance, rec: InstanceRecord, driver: PowerDriver, machine: Machine
) -> None:
    if rec.generation >= inst.generation:
        return  # acted on this generation already: power is what it is
    first = rec.generation < 0
    try:
        if inst.power == Power.OFF:
            await driver.power_off(grace=ctx.config.shutdown_grace)
        elif inst.state == "REBOOTING" and not first and await driver.state() == Power.ON:
            await driver.reboot()
        else:
            ctx.mark(inst.name, "devices_started", once=True)
            ctx.outbox.send(InstanceReport(inst.name, Phase.STARTING, inst.generation))
            await driver.power_on(machine)
            ctx.mark(inst.name, "powered_on", once=True)
    except PowerError as exc:
        metrics.RECONCILE_ERRORS.inc()
        raise ProvisionFailed(str(exc)) from exc
    rec.generation = inst.generation
    ctx.save()
