"""I/O on an open librbd image: python3-rbd's asynchronous calls behind ``AsyncVolume``.

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

``RbdImageIo`` takes the image object (``rbd.Image``, or a fake of it in unit
tests) and its ``pool/image`` name; ``offload.storage.rbd.RbdVolume`` opens,
locks and closes it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Any

import rbd

from offload.errors import StorageError
from offload.storage.volume import IoDone

__all__ = ["RbdImageIo"]


class RbdImageIo:
    """The ``Volume``/``AsyncVolume`` I/O methods over one open image."""

    size: int

    def __init__(self, image: Any, spec: str, *, read_only: bool = False) -> None:
        self._image = image
        self.spec = spec
        self.read_only = read_only
        if image is not None:
            self.size = int(image.size())

    def image_size(self) -> int:
        """The image's size now (grown by someone else, say)."""
        return int(self._call("size", "size"))

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

        self._submit("read", "aio_read", offset, length, complete)

    def aio_pwritev(self, views: Sequence[memoryview], offset: int, done: IoDone) -> None:
        data = views[0].tobytes() if len(views) == 1 else b"".join(views)
        self._submit("write", "aio_write", data, offset, self._status("write", done))

    def aio_flush(self, done: IoDone) -> None:
        self._submit("flush", "aio_flush", self._status("flush", done))

    def aio_discard(self, offset: int, length: int, done: IoDone) -> None:
        done_ = self._status("discard", done)
        self._submit("discard", "aio_discard", offset, length, done_)

    def aio_write_zeroes(self, offset: int, length: int, unmap: bool, done: IoDone) -> None:
        # librbd zeroes with a discard where whole objects go, which reads back as zeros.
        self._submit(
            "write-zeroes",
            "aio_write_zeroes",
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

    def _submit(self, what: str, method: str, *args: Any) -> None:
        if self._image is None:
            raise StorageError(f"volume {self.spec} is closed")
        try:
            getattr(self._image, method)(*args)
        except rbd.Error as exc:
            raise StorageError(f"{what} on {self.spec} refused: {exc}") from exc

    # -- synchronous I/O (the ``Volume`` protocol) ------------------------------

    def preadv(self, views: Sequence[memoryview], offset: int) -> int:
        length = sum(v.nbytes for v in views)
        data = memoryview(self._call("read", "read", offset, length))
        pos = 0
        for view in views:
            chunk = data[pos : pos + view.nbytes]
            view[: chunk.nbytes] = chunk
            view[chunk.nbytes :] = bytes(view.nbytes - chunk.nbytes)
            pos += view.nbytes
        return length

    def pwritev(self, views: Sequence[memoryview], offset: int) -> int:
        data = b"".join(views)
        self._call("write", "write", data, offset)
        return len(data)

    def flush(self) -> None:
        self._call("flush", "flush")

    def discard(self, offset: int, length: int) -> None:
        self._call("discard", "discard", offset, length)

    def write_zeroes(self, offset: int, length: int, unmap: bool) -> None:
        self._call("write-zeroes", "write_zeroes", offset, length)

    def _call(self, what: str, method: str, *args: Any) -> Any:
        if self._image is None:
            raise StorageError(f"volume {self.spec} is closed")
        try:
            return getattr(self._image, method)(*args)
        except rbd.Error as exc:
            raise StorageError(f"{what} on {self.spec} failed: {exc}") from exc

    def resize(self, new_size: int) -> None:
        """Grow the image to ``new_size`` bytes if it is smaller (never shrinks)."""
        current = self.image_size()
        if new_size < self.size:
            raise StorageError(f"refusing to shrink {self.spec} from {self.size} to {new_size}")
        if current < new_size:
            self._call("resize", "resize", new_size)
        self.size = new_size

    def close(self) -> None:
        self._image = None


def _failed(what: str, spec: str, ret: int) -> StorageError:
    code = -ret if ret < 0 else errno.EIO
    name = errno.errorcode.get(code, str(code))
    return StorageError(f"{what} on {spec} failed: {name} ({os.strerror(code)})")
