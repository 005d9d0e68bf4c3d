"""Volume engines: the ``Volume`` and ``AsyncVolume`` protocols and the sparse-file engine.

Two kinds of engine sit behind ``BlkDevice``: a ``Volume`` does each request
synchronously on the ring's thread (the sparse file: a ``preadv`` is
cheaper than any hand-off), an ``AsyncVolume`` (RBD, ``offload.storage.rbd``)
also takes requests with a completion callback, ``IoDone``, that it calls
exactly once, from any thread, with ``None`` or the ``StorageError``; the
device then keeps many requests in flight per ring.

``SparseFileVolume`` keeps one fd (O_RDWR, or O_RDONLY for read-only
volumes) and does positional I/O only, so queue threads share it without a
lock.  Reads and writes go straight from/to the guest's memoryviews with
``os.preadv``/``os.pwritev`` (zero-copy), looping on short transfers and in
batches of ``IOV_MAX`` buffers.  A read past end-of-file (the file shrank
behind our back) zero-fills instead of leaking stale guest bytes.

Discard and write-zeroes use ``fallocate(2)`` through ctypes (Python has no
binding for the flags): PUNCH_HOLE|KEEP_SIZE frees blocks and reads back
zeros, ZERO_RANGE|KEEP_SIZE zeroes while keeping the allocation.  Where the
file system refuses (EOPNOTSUPP), both fall back to writing zeros so the
result a guest reads back is the same.  ``resize`` only grows (ftruncate
keeps the file sparse).  OS errors are translated to ``StorageError`` here,
at the edge.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable, Sequence
from typing import Protocol, TypeAlias

from offload.errors import StorageError

__all__ = ["AsyncVolume", "IoDone", "SparseFileVolume", "Volume"]

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_FALLOC_FL_ZERO_RANGE = 0x10
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
_ZERO_CHUNK = 1 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_fallocate.restype = ctypes.c_int


class Volume(Protocol):
    """What a block device needs from a volume engine."""

    size: int
    read_only: bool

    def preadv(self, views: Sequence[memoryview], offset: int) -> int: ...
    def pwritev(self, views: Sequence[memoryview], offset: int) -> int: ...
    def flush(self) -> None: ...
    def discard(self, offset: int, length: int) -> None: ...
    def write_zeroes(self, offset: int, length: int, unmap: bool) -> None: ...
    def resize(self, new_size: int) -> None: ...
    def close(self) -> None: ...


#: called once per asynchronous request, from any thread: None, or what failed
IoDone: TypeAlias = Callable[[StorageError | None], None]


class AsyncVolume(Volume, Protocol):
    """A volume that also runs requests asynchronously (many in flight)."""

    def aio_preadv(self, views: Sequence[memoryview], offset: int, done: IoDone) -> None: ...
    def aio_pwritev(self, views: Sequence[memoryview], offset: int, done: IoDone) -> None: ...
    def aio_flush(self, done: IoDone) -> None: ...
    def aio_discard(self, offset: int, length: int, done: IoDone) -> None: ...
    def aio_write_zeroes(self, offset: int, length: int, unmap: bool, done: IoDone) -> None: ...


class SparseFileVolume:
    """A volume stored in one (sparse) regular file."""

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
        try:
            self.fd = os.open(path, flags)
            self.size = os.fstat(self.fd).st_size
        except OSError as exc:
            raise StorageError(f"cannot open volume {path}: {exc}") from exc
        self.path = os.fspath(path)
        self.read_only = read_only

    def __enter__(self) -> SparseFileVolume:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check(self, offset: int, length: int) -> None:
        if self.fd < 0:
            raise StorageError(f"volume {self.path} is closed")
        if offset < 0 or length < 0 or offset + length > self.size:
            raise StorageError(f"range {offset}+{length} outside volume of {self.size} bytes")

    def _check_writable(self) -> None:
        if self.read_only:
            raise StorageError(f"volume {self.path} is read-only")

    def preadv(self, views: Sequence[memoryview], offset: int) -> int:
        """Fill ``views`` from ``offset``; returns the bytes transferred."""
        total = sum(v.nbytes for v in views)
        self._check(offset, total)
        return self._transfer(list(views), offset, reading=True)

    def pwritev(self, views: Sequence[memoryview], offset: int) -> int:
        """Write ``views`` at ``offset``; returns the bytes transferred."""
        self._check_writable()
        total = sum(v.nbytes for v in views)
        self._check(offset, total)
        return self._transfer(list(views), offset, reading=False)

    def _transfer(self, views: list[memoryview], offset: int, *, reading: bool) -> int:
        fn = os.preadv if reading else os.pwritev
        done = 0
        while views:
            batch = views[:_IOV_MAX]
            try:
                n = fn(self.fd, batch, offset + done)
            except OSError as exc:
                raise StorageError(f"I/O error on {self.path}: {exc}") from exc
            if n == 0:
                if not reading:
                    raise StorageError(f"short write on {self.path}")
                for v in views:  # end of file: what lies past it reads as zeros
                    v[:] = bytes(v.nbytes)
                    done += v.nbytes
                break
            done += n
            # Drop the buffers that were completed; slice the partial one.
            while n:
                size = views[0].nbytes
                if n >= size:
                    views.pop(0)
                    n -= size
                else:
                    views[0] = views[0][n:]
                    n = 0
        return done

    def flush(self) -> None:
        self._check(0, 0)
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            raise StorageError(f"flush failed on {self.path}: {exc}") from exc

    def discard(self, offset: int, length: int) -> None:
        """Free the range (it reads back as zeros)."""
        self._check_writable()
        self._check(offset, length)
        self._fallocate_or_zero(_FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)

    def write_zeroes(self, offset: int, length: int, unmap: bool) -> None:
        """Zero the range; ``unmap`` lets us free the blocks instead."""
        self._check_writable()
        self._check(offset, length)
        mode = _FALLOC_FL_PUNCH_HOLE if unmap else _FALLOC_FL_ZERO_RANGE
        self._fallocate_or_zero(mode | _FALLOC_FL_KEEP_SIZE, offset, length)

    def _fallocate_or_zero(self, mode: int, offset: int, length: int) -> None:
        if not length:
            return
        if _fallocate(self.fd, mode, offset, length) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise StorageError(f"fallocate failed on {self.path}: {os.strerror(err)}")
        self._write_zeros(offset, length)

    def _write_zeros(self, offset: int, length: int) -> None:
        zeros = memoryview(bytes(min(length, _ZERO_CHUNK)))
        end = offset + length
        while offset < end:
            chunk = zeros[: min(end - offset, zeros.nbytes)]
            self._transfer([chunk], offset, reading=False)
            offset += chunk.nbytes

    def resize(self, new_size: int) -> None:
        """Grow the volume to ``new_size`` bytes (shrinking is refused)."""
        self._check_writable()
        self._check(0, 0)
        if new_size < self.size:
            raise StorageError(f"refusing to shrink {self.path} from {self.size} to {new_size}")
        try:
            os.ftruncate(self.fd, new_size)
        except OSError as exc:
            raise StorageError(f"cannot resize {self.path}: {exc}") from exc
        self.size = new_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
