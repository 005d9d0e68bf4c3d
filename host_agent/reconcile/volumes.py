"""Where an instance's disks come from: the storage back-end seam.

Provisioning asks a ``VolumeSource`` for each disk it serves and gets back
what ``offload-blk`` opens; it never creates, clones or deletes a disk
itself.  ``FileVolumes`` is today's back-end: a boot disk is a clone of an
image cached on the host (reflink / ``copy_file_range``), a data volume a
sparse file in ``volume_dir``, a local disk a sparse file under the state
directory.  A second back-end (a block store in a cluster) implements the
same four calls; boot disks and volumes then exist off the host, while
local disks stay files (they are the host's own).

Every call is idempotent: it is made on every reconcile run and returns
the existing disk when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from host_agent import metrics
from host_agent.config import AgentConfig, LocalDisk
from host_agent.desired import DesiredInstance, DesiredVolume
from host_agent.reconcile.errors import ProvisionFailed
from host_agent.reconcile.names import short_id
from host_agent.storage.clone import clone_volume, create_volume, grow_volume
from host_agent.storage.errors import (
    ImageChecksumMismatch,
    ImageNotBootable,
    ImageNotFound,
    InvalidChecksum,
    StorageError,
    UnsupportedImageSource,
)
from host_agent.storage.images import ImageCache

GIB = 1 << 30
#: errors that fail the instance instead of being retried
_PERMANENT = (
    ImageChecksumMismatch,
    ImageNotBootable,
    ImageNotFound,
    InvalidChecksum,
    UnsupportedImageSource,
)


class VolumeSource(Protocol):
    async def boot_disk(
        self, inst: DesiredInstance, boot: DesiredVolume, *, mark: Callable[[str], None]
    ) -> Path:
        """The instance's boot disk, cloned from its image when it does not exist
        (``mark("image_fetched")`` and ``mark("cloned")`` as those steps finish)."""

    async def data_volume(self, vol: DesiredVolume) -> tuple[Path, bool]:
        """The volume, created or grown to its desired size; True if it grew."""

    async def local_disk(self, disk: LocalDisk) -> Path:
        """The host's instance-store disk, created when missing."""

    def delete_boot_disk(self, instance: str) -> None:
        """Remove the instance's boot disk (teardown); data volumes stay."""


class FileVolumes:
    """Disks as files on this host (the embedded default)."""

    def __init__(self, config: AgentConfig, images: ImageCache) -> None:
        self.config = config
        self.images = images

    def volume_path(self, volume: str) -> Path:
        return self.config.volume_dir / f"{short_id(volume)}.img"

    def local_disk_path(self, disk: str) -> Path:
        return self.config.state_dir / "local" / f"{disk}.img"

    async def boot_disk(
        self, inst: DesiredInstance, boot: DesiredVolume, *, mark: Callable[[str], None]
    ) -> Path:
        path = self.volume_path(boot.volume)
        if not path.exists():
            await self._clone(inst, boot, path, mark)
        return path

    async def _clone(
        self, inst: DesiredInstance, boot: DesiredVolume, path: Path, mark: Callable[[str], None]
    ) -> None:
        if not inst.image_uri:
            raise ProvisionFailed(f"{inst.image or 'the image'} has no source URI")
        started = time.monotonic()
        async with contextlib.AsyncExitStack() as pinned:  # the cache keeps the image meanwhile
            try:
                image = await pinned.enter_async_context(
                    self.images.use(inst.image_uri, checksum=inst.image_checksum)
                )
            except _PERMANENT as exc:
                metrics.PROVISION_ERRORS.labels("image").inc()
                raise ProvisionFailed(str(exc)) from exc
            metrics.PROVISION_STEP_SECONDS.labels("image_fetch").observe(time.monotonic() - started)
            mark("image_fetched")
            started = time.monotonic()
            size = max(boot.size_gib * GIB, image.stat().st_size)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                await asyncio.to_thread(clone_volume, image, path, size_bytes=size)
            except StorageError as exc:
                metrics.PROVISION_ERRORS.labels("clone").inc()
                raise ProvisionFailed(f"cloning the boot disk failed: {exc}") from exc
            except OSError as exc:  # ENOSPC and friends
                metrics.PROVISION_ERRORS.labels("clone").inc()
                raise ProvisionFailed(
                    f"cloning the boot disk failed: {exc.strerror or exc}"
                ) from exc
        metrics.PROVISION_STEP_SECONDS.labels("clone").observe(time.monotonic() - started)
        mark("cloned")

    async def data_volume(self, vol: DesiredVolume) -> tuple[Path, bool]:
        path = self.volume_path(vol.volume)
        size = vol.size_gib * GIB
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(create_volume, path, size)
        elif path.stat().st_size < size:
            await asyncio.to_thread(grow_volume, path, size)
            return path, True
        return path, False

    async def local_disk(self, disk: LocalDisk) -> Path:
        path = self.local_disk_path(disk.name)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(create_volume, path, disk.size_gib * GIB)
        return path

    def delete_boot_disk(self, instance: str) -> None:
        self.volume_path(f"{instance}/boot").unlink(missing_ok=True)
