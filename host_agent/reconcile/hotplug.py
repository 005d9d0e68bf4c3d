"""Step 3c, hot-plug: the running server's volumes and NICs follow the desired lists.

Devices are level-triggered and ignore generations.  Before power is
applied, volumes and NICs no longer desired are unplugged (``device_del``
and the guest's release, when the server runs) and their back-ends
stopped; after it, desired ones the running server lacks are plugged.  The
instance record lists what the server has, so a restarted agent neither
plugs twice nor forgets to unplug.  Boot and local disks are part of the
server from power-on and never hot-plugged.
"""

from __future__ import annotations

from host_agent.desired import Power
from host_agent.power.base import Disk, Nic, PowerDriver
from host_agent.reconcile.context import Context
from host_agent.reconcile.names import disk_id, nic_id
from host_agent.state import InstanceRecord


def pluggable(volume: str, disk: Disk) -> bool:
    """Data volumes come and go while the server runs; boot and local disks do not."""
    return not disk.boot and not volume.startswith("local/")


async def unplug_removed(
    ctx: Context,
    rec: InstanceRecord,
    driver: PowerDriver,
    disks: dict[str, Disk],
    nics: dict[str, Nic],
) -> None:
    """Take volumes and NICs no longer desired out of the server (if it
    runs) and stop their back-ends."""
    on = await driver.state() == Power.ON
    for volume in [v for v in rec.attached if v not in disks]:
        if on:
            await driver.detach_disk(disk_id(volume))
        await ctx.stop_device(volume)
        rec.attached.remove(volume)
        ctx.save()
    for nic in [n for n in rec.nics if n not in nics]:
        if on:
            await driver.detach_nic(nic_id(nic))
        await ctx.stop_device(nic)
        rec.nics.remove(nic)
        ctx.save()


async def plug_new(
    ctx: Context,
    rec: InstanceRecord,
    driver: PowerDriver,
    disks: dict[str, Disk],
    nics: dict[str, Nic],
) -> None:
    """Hot-plug desired volumes and NICs the running server does not have yet."""
    if await driver.state() != Power.ON:
        return
    for volume, disk in disks.items():
        if pluggable(volume, disk) and volume not in rec.attached:
            await driver.attach_disk(disk)
            rec.attached.append(volume)
            ctx.save()
    for name, nic in nics.items():
        if name not in rec.nics:
            await driver.attach_nic(nic)
            rec.nics.append(name)
            ctx.save()
