"""``CephAdmin``: the control plane's blocking, idempotent calls on one pool.

Every call opens a short-lived client with bounded connect and operation
time-outs (``rados_mon_op_timeout``, ``rados_osd_op_timeout``), so a
cluster whose monitor is down costs one time-out and a ``CephUnavailable``,
never a hung controller.  Images are created with layering and
exclusive-lock (the card's ``offload-blk --rbd`` takes the lock).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import rados
import rbd

from control_plane.storage.errors import CephError, CephUnavailable, PoolMissing
from offload.errors import ClusterUnreachable, VolumeNotFound
from offload.errors import StorageError as OffloadStorageError
from offload.storage.fence import fence_image

#: image features of every disk: layering for clones, exclusive-lock for one writer
FEATURES = rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK
GIB = 1 << 30


class CephAdmin:
    def __init__(
        self,
        *,
        pool: str,
        conf: str | os.PathLike[str],
        client_id: str = "admin",
        timeout: float = 5.0,
    ) -> None:
        self.pool = pool
        self.conf = Path(conf)
        self.client_id = client_id
        self.timeout = timeout

    @contextlib.contextmanager
    def _ioctx(self) -> Iterator[Any]:
        seconds = str(max(1, round(self.timeout)))
        cluster = rados.Rados(
            conffile=str(self.conf),
            rados_id=self.client_id,
            conf={
                "client_mount_timeout": seconds,
                "rados_mon_op_timeout": seconds,
                "rados_osd_op_timeout": seconds,
            },
        )
        try:
            cluster.connect(timeout=max(1, round(self.timeout)))
        except rados.Error as exc:
            cluster.shutdown()
            raise CephUnavailable(f"ceph ({self.conf}): cannot connect: {exc}") from exc
        try:
            try:
                ioctx = cluster.open_ioctx(self.pool)
            except rados.ObjectNotFound as exc:
                raise PoolMissing(f"ceph pool {self.pool!r} does not exist ({self.conf})") from exc
            except rados.Error as exc:
                raise _translate(exc, f"pool {self.pool}") from exc
            try:
                yield ioctx
            except (rbd.Error, rados.Error) as exc:
                raise _translate(exc, self.pool) from exc
            finally:
                ioctx.close()
        finally:
            cluster.shutdown()

    def check(self) -> None:
        """Reach the cluster and open the pool (start-up check)."""
        with self._ioctx():
            pass

    def images(self, prefix: str = "") -> list[str]:
        with self._ioctx() as ioctx:
            return sorted(n for n in rbd.RBD().list(ioctx) if n.startswith(prefix))

    def size(self, name: str) -> int | None:
        """Bytes of *name*, None if it does not exist."""
        with self._ioctx() as ioctx:
            try:
                with rbd.Image(ioctx, name, read_only=True) as image:
                    return int(image.size())
            except rbd.ImageNotFound:
                return None

    def ensure_volume(self, name: str, size_bytes: int) -> bool:
        """Make *name* exist with at least *size_bytes* (create or grow); True if changed."""
        with self._ioctx() as ioctx:
            try:
                with rbd.Image(ioctx, name) as image:
                    if image.size() >= size_bytes:
                        return False
                    image.resize(size_bytes)
                    return True
            except rbd.ImageNotFound:
                pass
            with contextlib.suppress(rbd.ImageExists):  # made meanwhile: grown next pass
                rbd.RBD().create(ioctx, name, size_bytes, old_format=False, features=FEATURES)
            return True

    def remove(self, name: str) -> bool:
        """Delete *name* (and its snapshots) if it exists; True if this call deleted it."""
        with self._ioctx() as ioctx:
            try:
                rbd.RBD().remove(ioctx, name)
            except rbd.ImageNotFound:
                return False
            return True

    def fence(self, names: list[str], *, expire: float = 3600.0) -> list[str]:
        """Blocklist the holders of each image's lock; the addresses fenced."""
        fenced: list[str] = []
        for name in names:
            try:
                fenced += fence_image(
                    self.conf,
                    self.pool,
                    name,
                    client_id=self.client_id,
                    expire=expire,
                    timeout=self.timeout,
                )
            except VolumeNotFound:
                continue  # nothing to fence: nobody can hold a disk that does not exist
            except ClusterUnreachable as exc:
                raise CephUnavailable(str(exc)) from exc
            except OffloadStorageError as exc:
                raise CephError(str(exc)) from exc
        return fenced


def _translate(exc: Exception, what: str) -> CephError:
    if isinstance(exc, rados.TimedOut | rbd.Timeout | rados.ConnectionShutdown):
        return CephUnavailable(f"ceph {what}: timed out: {exc}")
    return CephError(f"ceph {what}: {exc}")
