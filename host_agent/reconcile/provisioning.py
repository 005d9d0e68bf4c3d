"""Step 3a, provisioning: a served disk for every desired volume.

The disks come first, from the volume source (``volumes.VolumeSource``:
the boot disk cloned from the image, the host's local disks, the data
volumes, in that order, each created or grown as needed); then every
back-end starts at once, since each is a process whose start-up is mostly
waiting.  A data volume that grew has its running back-end told, and the
guest sees the new capacity online; a volume's QoS limits
(``max_iops``/``max_mbps``) are handed to its back-end on the command line
and, when they change, through its limits file and SIGHUP.  Idempotent: a second run finds the
disks and adopts the running back-ends.

Without devices (``devices = false``: the fake power driver's scale
tests) only the data volumes' ids are returned, for hot-plug bookkeeping.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from host_agent import metrics
from host_agent.desired import DesiredInstance
from host_agent.devices import BlkSpec, DiskSource
from host_agent.power.base import Disk
from host_agent.reconcile.context import Context
from host_agent.reconcile.names import disk_id


async def provision(ctx: Context, inst: DesiredInstance) -> dict[str, Disk]:
    """Volume name -> its disk, served (idempotent)."""
    if not ctx.config.devices:
        return {
            v.volume: Disk(id=disk_id(v.volume), socket=Path()) for v in inst.volumes if not v.boot
        }
    wanted: list[tuple[str, DiskSource, bool]] = []  # volume, file, boot
    boot = next((v for v in inst.volumes if v.boot), None)
    if boot is not None:
        path = await ctx.volumes.boot_disk(inst, boot, mark=lambda step: ctx.mark(inst.name, step))
        wanted.append((boot.volume, path, True))
    for local in ctx.config.local_disks:
        wanted.append((f"local/{local.name}", await ctx.volumes.local_disk(local), False))
    for vol in inst.volumes:
        if not vol.boot:
            path, grown = await ctx.volumes.data_volume(vol)
            backend = ctx.backends.get(vol.volume)
            if grown and backend is not None:
                await asyncio.to_thread(backend.resize)
                metrics.VOLUME_RESIZES.inc()
            wanted.append((vol.volume, path, False))
    disks = await asyncio.gather(
        *(_serve(ctx, inst, volume, path, boot=is_boot) for volume, path, is_boot in wanted)
    )
    return {volume: disk for (volume, _, _), disk in zip(wanted, disks, strict=True)}


async def _serve(
    ctx: Context, inst: DesiredInstance, volume: str, path: DiskSource, *, boot: bool
) -> Disk:
    ident = disk_id(volume, boot=boot)
    desired = next((v for v in inst.volumes if v.volume == volume), None)
    iops, mbps = (0, 0) if desired is None else (desired.max_iops, desired.max_mbps)
    spec = BlkSpec(
        id=volume,
        image=path,
        socket=ctx.socket_path(inst.name, ident),
        serial=ident,
        max_iops=iops,
        max_mbps=mbps,
    )
    backend = await ctx.start_backend(spec)
    # QoS follows the desired volume on a running back-end too (UpdateVolume).
    await asyncio.to_thread(backend.apply_limits, iops, mbps)
    return Disk(id=ident, socket=backend.spec.socket, boot=boot)
