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

I/O: ``aio_read``/``aio_write``/``aio_flush``/``aio_discard``/
``aio_write_zeroes`` take a Python callback that librbd calls on one of its
own threads (the "finisher") with the GIL taken.  python-rbd only accepts
``bytes``: a write gathers the guest's buffers into one ``bytes`` first and a
read's result is copied into the guest's buffers in the callback (one copy
each way, unlike the file engine's zero-copy ``preadv``; librbd never sees
guest memory).  The callback translates the return value (a negative errno)
into ``None`` or a ``StorageError`` and calls the request's ``IoDone`` exactly
once.  Requests complete in whatever order the OSDs answer; nothing here
orders them (virtio-blk does not ask it: a driver that needs order waits for
a completion, and FLUSH covers every write completed before it).

Fencing: once the cluster blocklists our client (``offload.storage.fence``),
the OSDs refuse its operations and librbd fails every write with
``-ESHUTDOWN`` (``EBLOCKLISTED``): the guest gets VIRTIO_BLK_S_IOERR.

``resize`` grows the image if it is smaller and adopts the new size; the
image grown by someone else (the control plane) is seen by ``image_size``
(librbd refreshes its header on the resize notification).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Sequence
from typing import Any, Final

import rados
import rbd

from offload.errors import ClusterUnreachable, StorageError, VolumeLocked, VolumeNotFound
from offload.storage.volume import IoDone

__all__ = ["RbdVolume", "parse_spec"]

DEFAULT_CONNECT_TIMEOUT: Final = 10.0


def parse_spec(spec: str) -> tuple[str, str]:
    """``POOL/IMAGE`` -> (pool, image); ValueError with a one-line reason."""
    pool, sep, image = spec.partition("/")
    if not sep or not pool or not image or "/" in image:
        raise ValueError(f"{spec!r} is not POOL/IMAGE")
    return pool, image


class RbdVolume:
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
        self._image: Any = None
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

    def image_size(self) -> int:
        """The image's size now (grown by someone else, say)."""
        try:
            return int(self._image.size())
        except rbd.Error as exc:
            raise StorageError(f"cannot read the size of {self.spec}: {exc}") from exc

    # -- asynchronous I/O -----------------------------------------------------

    def aio_preadv(self, views: Sequence[memoryview], offset: int, done: IoDone) -> None:
        length = sum(v.nbytes for v in views)
        spec = self.spec

        def complete(completion: Any, data: bytes | None) -> None:
            ret = completion.get_return_value()
            if ret < 0 or data is None:
                done(_failed("read", spec, ret))
                return
            src = memoryview(data)
            pos = 0
            for view in views:
                n = view.nbytes
                chunk = src[pos : pos + n]
                view[: chunk.nbytes] = chunk
                if chunk.nbytes < n:  # past the end: zeros, never stale guest bytes
                    view[chunk.nbytes :] = bytes(n - chunk.nbytes)
                pos += n
            done(None)

        self._submit("read", self._image.aio_read, offset, length, complete)

    def aio_pwritev(self, views: Sequence[memoryview], offset: int, done: IoDone) -> None:
        data = views[0].tobytes() if len(views) == 1 else b"".join(views)
        self._submit("write", self._image.aio_write, data, offset, self._status("write", done))

    def aio_flush(self, done: IoDone) -> None:
        self._submit("flush", self._image.aio_flush, self._status("flush", done))

    def aio_discard(self, offset: int, length: int, done: IoDone) -> None:
        done_ = self._status("discard", done)
        self._submit("discard", self._image.aio_discard, offset, length, done_)

    def aio_write_zeroes(self, offset: int, length: int, unmap: bool, done: IoDone) -> None:
        # librbd zeroes with a discard where whole objects go, which reads back as zeros.
        self._submit(
            "write-zeroes",
            self._image.aio_write_zeroes,
            offset,
            length,
            self._status("write-zeroes", done),
        )

    def _status(self, what: str, done: IoDone) -> Any:
        spec = self.spec

        def complete(completion: Any) -> None:
            ret = completion.get_return_value()
            done(None if ret >= 0 else _failed(what, spec, ret))

        return complete

    def _submit(self, what: str, fn: Any, *args: Any) -> None:
        if self._image is None:
            raise StorageError(f"volume {self.spec} is closed")
        try:
            fn(*args)
        except rbd.Error as exc:
            raise StorageError(f"{what} on {self.spec} refused: {exc}") from exc

    # -- synchronous I/O (the ``Volume`` protocol) ------------------------------

    def preadv(self, views: Sequence[memoryview], offset: int) -> int:
        length = sum(v.nbytes for v in views)
        data = memoryview(self._call("read", self._image.read, offset, length))
        pos = 0
        for view in views:
            chunk = data[pos : pos + view.nbytes]
            view[: chunk.nbytes] = chunk
            view[chunk.nbytes :] = bytes(view.nbytes - chunk.nbytes)
            pos += view.nbytes
        return length

    def pwritev(self, views: Sequence[memoryview], offset: int) -> int:
        data = b"".join(views)
        self._call("write", self._image.write, data, offset)
        return len(data)

    def flush(self) -> None:
        self._call("flush", self._image.flush)

    def discard(self, offset: int, length: int) -> None:
        self._call("discard", self._image.discard, offset, length)

    def write_zeroes(self, offset: int, length: int, unmap: bool) -> None:
        self._call("write-zeroes", self._image.write_zeroes, offset, length)

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        if self._image is None:
            raise StorageError(f"volume {self.spec} is closed")
        try:
            return fn(*args)
        except rbd.Error as exc:
            raise StorageError(f"{what} on {self.spec} failed: {exc}") from exc

    def resize(self, new_size: int) -> None:
        """Grow the image to ``new_size`` bytes if it is smaller (never shrinks)."""
        current = self.image_size()
        if new_size < self.size:
            raise StorageError(f"refusing to shrink {self.spec} from {self.size} to {new_size}")
        if current < new_size:
            self._call("resize", self._image.resize, new_size)
        self.size = new_size

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


def _failed(what: str, spec: str, ret: int) -> StorageError:
    code = -ret if ret < 0 else errno.EIO
    name = errno.errorcode.get(code, str(code))
    return StorageError(f"{what} on {spec} failed: {name} ({os.strerror(code)})")
