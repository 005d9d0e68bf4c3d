"""The non-blocking engine for file volumes: try without waiting, else a completion pool.

One ``FileEngine`` per device serves every ring.  It is an ``AsyncVolume``
over a ``SparseFileVolume``, so ``BlkDevice`` keeps many requests in flight
per ring and completes them in any order, as it does for RBD.  How a request
runs:

0. a file in memory (tmpfs, ramfs: ``fstatfs`` at open) never waits on a
   device, so its reads and writes run on the ring's thread outright (those
   file systems refuse RWF_NOWAIT, and a hand-off would only add cost);
1. a read first tries ``preadv2(RWF_NOWAIT)`` on the ring's own thread
   (``try_preadv``): when the data is in the page cache this is the whole
   request, with no hand-off and no wake-up, and the device completes it
   at once;
2. a write tries ``pwritev2(RWF_NOWAIT)`` the same way (``try_pwritev``);
   where the file system refuses the flag for buffered writes (ext4 on
   Linux 6.x answers EOPNOTSUPP) the engine remembers it and writes go
   straight to step 3;
3. anything that would block (EAGAIN, a short transfer, a read past the end
   of the file), every FLUSH, DISCARD and WRITE_ZEROES, is queued to a small
   pool of worker threads (``workers``, 4) that run the blocking call and
   call the request's ``IoDone`` from their thread; the device's completion
   channel carries it back to the ring.

So a request that waits on the disk occupies one pool thread, never a
ring, and the requests behind it on the same ring complete before it.  Why
this engine rather than io_uring is measured in ``bench/blk_engines.py``
and explained in docs/offload.md.

``delay`` (tests only) is called with (operation, offset) before a request
runs; a positive answer sends the request to the pool, which sleeps that
long first: a slow disk on demand, for the out-of-order and no-stall tests.
"""

from __future__ import annotations

import ctypes
import errno
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from offload.errors import StorageError
from offload.storage.volume import IoDone, SparseFileVolume

__all__ = ["DEFAULT_WORKERS", "FileEngine"]

DEFAULT_WORKERS = 4
#: statfs f_type of file systems whose files live in memory
_MEMORY_FS = frozenset({0x01021994, 0x858458F6})  # TMPFS_MAGIC, RAMFS_MAGIC
_libc = ctypes.CDLL(None, use_errno=True)
_IOV_MAX = os.sysconf("SC_IOV_MAX")
#: (operation, offset) -> seconds to wait before running it (tests)
Delay = Callable[[str, int], float]
_Job = tuple[str, int, Callable[..., object], tuple[Any, ...], IoDone] | None


class FileEngine:
    """A file volume with non-blocking fast paths and a completion pool."""

    def __init__(
        self,
        volume: SparseFileVolume,
        *,
        workers: int = DEFAULT_WORKERS,
        delay: Delay | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be positive, not {workers}")
        self.volume = volume
        self.read_only = volume.read_only
        self._delay = delay
        self.in_memory = _fs_type(volume.fd) in _MEMORY_FS
        self._nowait_reads = True
        self._nowait_writes = not volume.read_only
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"blk-io{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    # -- the Volume protocol (synchronous; resize and the rest) -------------

    @property
    def size(self) -> int:
        return self.volume.size

    @size.setter
    def size(self, value: int) -> None:
        self.volume.size = value

    def preadv(self, views: Sequence[memoryview], offset: int) -> int:
        return self.volume.preadv(views, offset)

    def pwritev(self, views: Sequence[memoryview], offset: int) -> int:
        return self.volume.pwritev(views, offset)

    def flush(self) -> None:
        self.volume.flush()

    def discard(self, offset: int, length: int) -> None:
        self.volume.discard(offset, length)

    def write_zeroes(self, offset: int, length: int, unmap: bool) -> None:
        self.volume.write_zeroes(offset, length, unmap)

    def resize(self, new_size: int) -> None:
        self.volume.resize(new_size)

    # -- the fast paths (the ring's thread) -----------------------------------

    def try_preadv(self, views: list[memoryview], offset: int, length: int) -> bool:
        """Read now if nothing has to wait; False: submit it with ``aio_preadv``."""
        if self._delay is not None and self._delay("read", offset) > 0:
            return False
        if len(views) > _IOV_MAX or self.volume.fd < 0:
            return False
        if self.in_memory:
            try:
                return os.preadv(self.volume.fd, views, offset) == length
            except OSError:
                return False  # the pool reports it
        if not self._nowait_reads:
            return False
        try:
            # A short read (part cached, or end of file) goes to the pool whole.
            return os.preadv(self.volume.fd, views, offset, os.RWF_NOWAIT) == length
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                self._nowait_reads = False  # this file system: always the pool
            return False  # EAGAIN, or a real error the pool reports

    def try_pwritev(self, views: list[memoryview], offset: int, length: int) -> bool:
        """Write now if nothing has to wait; False: submit it with ``aio_pwritev``."""
        if not self._nowait_writes and not self.in_memory:
            return False
        if self._delay is not None and self._delay("write", offset) > 0:
            return False
        if len(views) > _IOV_MAX or self.volume.fd < 0:
            return False
        if self.in_memory:
            try:
                return os.pwritev(self.volume.fd, views, offset) == length
            except OSError:
                return False  # the pool reports it
        try:
            # A short write leaves a prefix written; the pool writes it all again.
            return os.pwritev(self.volume.fd, views, offset, os.RWF_NOWAIT) == length
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                self._nowait_writes = False  # this file system: always the pool
            return False

    # -- the AsyncVolume protocol (the pool) ----------------------------------

    def aio_preadv(self, views: Sequence[memoryview], offset: int, done: IoDone) -> None:
        self._put("read", offset, self.volume.preadv, (views, offset), done)

    def aio_pwritev(self, views: Sequence[memoryview], offset: int, done: IoDone) -> None:
        self._put("write", offset, self.volume.pwritev, (views, offset), done)

    def aio_flush(self, done: IoDone) -> None:
        self._put("flush", 0, self.volume.flush, (), done)

    def aio_discard(self, offset: int, length: int, done: IoDone) -> None:
        self._put("discard", offset, self.volume.discard, (offset, length), done)

    def aio_write_zeroes(self, offset: int, length: int, unmap: bool, done: IoDone) -> None:
        self._put("write_zeroes", offset, self.volume.write_zeroes, (offset, length, unmap), done)

    def _put(
        self, op: str, offset: int, fn: Callable[..., object], args: tuple[Any, ...], done: IoDone
    ) -> None:
        if not self._threads:
            raise StorageError(f"volume {self.volume.path} is closed")
        self._jobs.put((op, offset, fn, args, done))

    def _work(self) -> None:
        jobs = self._jobs
        delay = self._delay
        while True:
            job = jobs.get()
            if job is None:
                return
            op, offset, fn, args, done = job
            if delay is not None:
                wait = delay(op, offset)
                if wait > 0:
                    time.sleep(wait)
            try:
                fn(*args)
            except StorageError as exc:
                done(exc)
            else:
                done(None)

    def close(self) -> None:
        """Finish what is queued, stop the pool, close the file."""
        threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join()
        self.volume.close()


def _fs_type(fd: int) -> int:
    """``statfs.f_type`` of the file system holding *fd* (0 if unknown)."""
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    if _libc.fstatfs(fd, buf) != 0:
        return 0
    return int(struct.unpack_from("l", buf)[0])
