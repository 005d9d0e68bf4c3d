"""The Ceph RBD volume engine: librbd through python3-rbd's asynchronous calls.

Opening (``RbdVolume.__init__``), each step a one-line ``StorageError``:

1. ``rados.Rados(conffile, rados_id)`` with ``client_mount_timeout`` and
   ``rados_mon_op_timeout`` set to ``connect_timeout`` (python-rados ignores
   ``connect``'s own timeout): an unreachable cluster is
   ``ClusterUnreachable`` after that long, not a hang.  ``rbd_cache`` is off:
   a write completes only once the OSDs have it, so a fenced client can never
   see a write "succeed" into its own cache (QEMU does the same with
   ``cache=none``);
2. ``open_ioctx(pool)``: a missing pool is ``VolumeNotFound``;
3. ``rbd.Image(ioctx, name)``: a missing image is ``VolumeNotFound``;
4. for a writable disk, the image must have the exclusive-lock feature and we
   take the lock in *managed* mode (``lock_acquire(EXCLUSIVE)``): librbd then
   never hands it to another client that asks for it.  A live holder makes
   librbd refuse at once (EROFS): ``VolumeLocked``.  A holder that died keeps
   its watch on the header until the OSD times it out
   (``osd_client_watch_timeout``, 30 s by default); librbd waits that out,
   then breaks the stale lock and blocklists its old owner, so a back-end
   restarted after a crash gets its disk back by itself.

I/O is ``offload.storage.rbd_io.RbdImageIo``'s (the base class).

Fencing: once the cluster blocklists our client (``offload.storage.fence``),
the OSDs refuse its operations and librbd fails every write with
``-ESHUTDOWN`` (``EBLOCKLISTED``): the guest gets VIRTIO_BLK_S_IOERR.

``resize`` grows the image if it is smaller and adopts the new size; the
image grown by someone else (the control plane) is seen by ``image_size``
(librbd refreshes its header on the resize notification).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Final

import rados
import rbd

from offload.errors import ClusterUnreachable, StorageError, VolumeLocked, VolumeNotFound
from offload.storage.rbd_io import RbdImageIo

__all__ = ["RbdVolume", "parse_spec"]

DEFAULT_CONNECT_TIMEOUT: Final = 10.0


def parse_spec(spec: str) -> tuple[str, str]:
    """``POOL/IMAGE`` -> (pool, image); ValueError with a one-line reason."""
    pool, sep, image = spec.partition("/")
    if not sep or not pool or not image or "/" in image:
        raise ValueError(f"{spec!r} is not POOL/IMAGE")
    return pool, image


class RbdVolume(RbdImageIo):
    """One RBD image, opened (and, writable, exclusively locked) for one device."""

    def __init__(
        self,
        *,
        pool: str,
        image: str,
        conf: str | os.PathLike[str],
        client_id: str = "admin",
        read_only: bool = False,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.pool = pool
        self.name = image
        self.read_only = read_only
        self.spec = f"{pool}/{image}"
        self._cluster = self._connect(os.fspath(conf), client_id, connect_timeout)
        self._ioctx: Any = None
        super().__init__(None, self.spec, read_only=read_only)
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _connect(conf: str, client_id: str, timeout: float) -> Any:
        if not os.path.isfile(conf):
            raise StorageError(f"ceph config {conf} does not exist")
        try:
            cluster = rados.Rados(conffile=conf, rados_id=client_id)
            seconds = str(max(1, int(timeout)))
            cluster.conf_set("client_mount_timeout", seconds)
            cluster.conf_set("rados_mon_op_timeout", seconds)
            cluster.conf_set("rbd_cache", "false")
        except rados.Error as exc:
            raise StorageError(f"ceph config {conf}: {exc}") from exc
        try:
            cluster.connect()
        except rados.Error as exc:
            cluster.shutdown()
            raise ClusterUnreachable(
                f"cannot reach the Ceph cluster of {conf} as client.{client_id} "
                f"within {seconds}s: {exc}"
            ) from exc
        return cluster

    def _open(self) -> None:
        try:
            self._ioctx = self._cluster.open_ioctx(self.pool)
        except rados.ObjectNotFound as exc:
            raise VolumeNotFound(f"pool {self.pool} does not exist") from exc
        except rados.Error as exc:
            raise StorageError(f"cannot open pool {self.pool}: {exc}") from exc
        try:
            self._image = rbd.Image(self._ioctx, self.name, read_only=self.read_only)
        except rbd.ImageNotFound as exc:
            raise VolumeNotFound(f"image {self.spec} does not exist") from exc
        except rbd.Error as exc:
            raise StorageError(f"cannot open image {self.spec}: {exc}") from exc
        if not self.read_only:
            self._lock()
        self.size = int(self._image.size())

    def _lock(self) -> None:
        if not self._image.features() & rbd.RBD_FEATURE_EXCLUSIVE_LOCK:
            raise StorageError(
                f"image {self.spec} lacks the exclusive-lock feature (one writer per disk)"
            )
        try:
            self._image.lock_acquire(rbd.RBD_LOCK_MODE_EXCLUSIVE)
        except (rbd.ReadOnlyImage, rbd.ImageBusy) as exc:
            raise VolumeLocked(f"image {self.spec} is held by another client") from exc
        except rbd.Error as exc:
            raise StorageError(f"cannot lock image {self.spec}: {exc}") from exc

    # -- identity -------------------------------------------------------------

    @property
    def client_address(self) -> str:
        """Our client's address as the cluster sees it (what a fence blocklists)."""
        return str(self._cluster.get_addrs())

    def close(self) -> None:
        """Close the image (which releases the lock), the pool and the client."""
        image, self._image = self._image, None
        if image is not None:
            with contextlib.suppress(rbd.Error):  # fenced: the lock is the cluster's now
                image.close()
        ioctx, self._ioctx = self._ioctx, None
        if ioctx is not None:
            ioctx.close()
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.shutdown()

    def __enter__(self) -> RbdVolume:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
