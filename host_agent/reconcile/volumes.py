"""Where an instance's disks come from: the storage back-end seam.

Provisioning asks a ``VolumeSource`` for each disk it serves and gets back
what ``offload-blk`` opens; it never creates, clones or deletes a disk
itself.  ``FileVolumes`` is today's back-end: a boot disk is a clone of an
image cached on the host (reflink / ``copy_file_range``), a data volume a
sparse file in ``volume_dir``, a local disk a sparse file under the state
directory.  ``RbdVolumes`` (``[storage] backend = "rbd"``) implements the
same four calls on a Ceph pool: boot disks and volumes then exist off the
host, while local disks stay files (they are the host's own).  It acts on
the names the control plane sent (``DesiredVolume.rbd_image`` and
``rbd_parent``) and only where the agent is the right actor:

- a boot disk: the image is fetched and verified as for files, imported
  into the pool once as the parent (``host_agent.storage.rbd``), and the
  disk made a layered clone of its protected snapshot (or found, and kept:
  after a failover it holds what the guest wrote);
- a data volume: the control plane creates and grows it; the agent only
  checks it exists (a missing one is retried, not failed) and notices when
  it grew, to tell the running back-end;
- delete: never; the control plane deletes boot disks of instances that
  are gone.  An agent tearing down an instance that moved to another host
  must not touch the disk that host now serves.

A volume without an RBD name is served from files, whatever the back-end.

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
from host_agent.devices import DiskSource, RbdDisk
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
    VolumeSizeError,
)
from host_agent.storage.images import ImageCache
from host_agent.storage.rbd import CephTarget, RbdPool

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
    ) -> DiskSource:
        """The instance's boot disk, cloned from its image when it does not exist
        (``mark("image_fetched")`` and ``mark("cloned")`` as those steps finish)."""

    async def data_volume(self, vol: DesiredVolume) -> tuple[DiskSource, bool]:
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


class VolumeNotReady(Exception):
    """A cloud volume's image does not exist yet (the control plane makes it): retry."""


class RbdVolumes:
    """Boot disks and volumes in a Ceph pool; local disks and unnamed volumes as files."""

    def __init__(self, config: AgentConfig, images: ImageCache, *, timeout: float = 10.0) -> None:
        if config.storage.ceph_conf is None:
            raise ValueError("RbdVolumes needs [storage] ceph_conf")
        self.files = FileVolumes(config, images)
        self.images = images
        self.target = CephTarget(
            pool=config.storage.pool,
            conf=config.storage.ceph_conf,
            client_id=config.storage.client_id,
        )
        self.timeout = timeout
        #: per image, the size it had when last looked at: a boot disk already
        #: made is not looked at again, a volume that grew has its back-end told
        self._sizes: dict[str, int] = {}
        #: instance -> its boot disk's image (forgotten at teardown)
        self._boot_of: dict[str, str] = {}

    def disk(self, image: str) -> RbdDisk:
        return RbdDisk(
            pool=self.target.pool,
            image=image,
            conf=self.target.conf,
            client_id=self.target.client_id,
        )

    def volume_path(self, volume: str) -> Path:
        return self.files.volume_path(volume)

    def local_disk_path(self, disk: str) -> Path:
        return self.files.local_disk_path(disk)

    def _pool(self) -> RbdPool:
        return RbdPool(self.target, timeout=self.timeout)

    def check(self) -> None:
        """Connect and open the pool once; ``VolumeError`` (one line) when that fails."""
        self._pool().close()

    async def boot_disk(
        self, inst: DesiredInstance, boot: DesiredVolume, *, mark: Callable[[str], None]
    ) -> DiskSource:
        if not boot.rbd_image:
            return await self.files.boot_disk(inst, boot, mark=mark)
        if not boot.rbd_parent:
            raise ProvisionFailed(f"boot disk {boot.rbd_image}: the control plane sent no parent")
        size = boot.size_gib * GIB
        if self._sizes.get(boot.rbd_image, -1) >= size:
            return self.disk(boot.rbd_image)  # made (or found) by an earlier pass
        if not await asyncio.to_thread(self._exists, boot.rbd_image):
            await self._clone(inst, boot, size, mark)
        else:
            await asyncio.to_thread(self._grow, boot.rbd_image, size)
        self._sizes[boot.rbd_image] = size
        self._boot_of[inst.name] = boot.rbd_image
        return self.disk(boot.rbd_image)

    def _exists(self, name: str) -> bool:
        with self._pool() as pool:
            return pool.exists(name)

    def _grow(self, name: str, size: int) -> None:
        with self._pool() as pool:
            pool.ensure_size(name, size)

    async def _clone(
        self, inst: DesiredInstance, boot: DesiredVolume, size: int, mark: Callable[[str], None]
    ) -> None:
        if not inst.image_uri:
            raise ProvisionFailed(f"{inst.image or 'the image'} has no source URI")
        started = time.monotonic()
        async with contextlib.AsyncExitStack() as pinned:
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
            size = max(size, image.stat().st_size)
            try:
                await asyncio.to_thread(self._import_and_clone, boot, image, size)
            except (VolumeSizeError, ValueError) as exc:
                metrics.PROVISION_ERRORS.labels("clone").inc()
                raise ProvisionFailed(f"cloning the boot disk failed: {exc}") from exc
        metrics.PROVISION_STEP_SECONDS.labels("clone").observe(time.monotonic() - started)
        mark("cloned")

    def _import_and_clone(self, boot: DesiredVolume, image: Path, size: int) -> None:
        with self._pool() as pool:
            pool.ensure_parent(boot.rbd_parent, image)
            pool.ensure_clone(boot.rbd_image, boot.rbd_parent, size)

    async def data_volume(self, vol: DesiredVolume) -> tuple[DiskSource, bool]:
        if not vol.rbd_image:
            return await self.files.data_volume(vol)
        size = await asyncio.to_thread(self._size, vol.rbd_image)
        if size is None:
            raise VolumeNotReady(f"volume image {vol.rbd_image} does not exist yet")
        before = self._sizes.get(vol.rbd_image)
        self._sizes[vol.rbd_image] = size
        return self.disk(vol.rbd_image), before is not None and size > before

    def _size(self, name: str) -> int | None:
        with self._pool() as pool:
            return pool.size(name) if pool.exists(name) else None

    async def local_disk(self, disk: LocalDisk) -> Path:
        return await self.files.local_disk(disk)

    def delete_boot_disk(self, instance: str) -> None:
        # never the RBD image (see the module docstring): only what we knew of it
        self._sizes.pop(self._boot_of.pop(instance, ""), None)
        self.files.delete_boot_disk(instance)  # a file boot disk, if there ever was one


def volume_source(config: AgentConfig, images: ImageCache) -> FileVolumes | RbdVolumes:
    """The volume source ``[storage]`` asks for."""
    return RbdVolumes(config, images) if config.storage.rbd else FileVolumes(config, images)
