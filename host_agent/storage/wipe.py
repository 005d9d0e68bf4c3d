"""Secure wipe of a local instance-store disk, proven by reading it back.

``wipe_disk(path)`` handles a regular file or a block device.

A **file** gets one ``fallocate(PUNCH_HOLE | KEEP_SIZE)`` over its whole
length, through libc with ctypes (``os.posix_fallocate`` can only allocate):
the file system frees every block, the size stays, and all of it reads as
zeros.  The cost is proportional to the extents freed, not to the length,
so a 100 GiB sparse file takes milliseconds.  Where punching is not
supported (EOPNOTSUPP), zeros are written over the data extents instead
(holes already read as zeros).

A **block device** is opened with ``O_EXCL`` (refused with EBUSY while it
is mounted or held open exclusively), then gets ``BLKDISCARD`` (lets the device drop the blocks; a
hint, its read-back is not guaranteed) then ``BLKZEROOUT`` (guaranteed
zeros; the kernel uses WRITE ZEROES or unmap when the device can, writes
zeros otherwise).  If BLKZEROOUT is refused, zeros are written by us.

Both are fsynced, the page cache for the disk is dropped
(``POSIX_FADV_DONTNEED``), and the disk is **verified**: a file's remaining
data extents (SEEK_DATA/SEEK_HOLE; normally none) are read in full, plus
``samples`` 4 KiB reads at random offsets, one in each of ``samples`` equal
strides of the whole length, which checks the holes too without reading
them all.  A block device is read back in full by default; with
``full_readback=False`` only the strided samples are read (the sampled
mode: it catches a wipe that did not happen, not a few stray blocks).  The
first non-zero byte raises ``WipeVerificationFailed`` with its offset.

Everything here blocks (a full read-back of a large device takes minutes);
from asyncio use ``asyncio.to_thread(wipe_disk, path)``.  Errors are the
``WipeError`` branch of ``errors``.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import random
import stat
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from host_agent.storage.errors import WipeError, WipeFailed, WipeVerificationFailed
from host_agent.storage.extents import CHUNK, data_extents, first_nonzero, is_zero, read_full

__all__ = ["DEFAULT_SAMPLES", "WipeMethod", "WipeResult", "wipe_disk"]

WipeMethod = Literal["punch_hole", "zero_extents", "discard_zeroout", "zeroout", "write_zeros"]

DEFAULT_SAMPLES = 1024
SAMPLE_BYTES = 4096
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_BLKDISCARD = 0x1277  # _IO(0x12, 119), arg: u64 range[2] = {start, length}
_BLKZEROOUT = 0x127F  # _IO(0x12, 127), same argument
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOTTY, errno.ENOSYS, errno.EINVAL}

_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = _libc.fallocate64 if hasattr(_libc, "fallocate64") else _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_fallocate.restype = ctypes.c_int


@dataclass(frozen=True)
class WipeResult:
    """What a wipe did and how much of it was read back.

    ``bytes_wiped`` is the range the wipe itself covered: the whole length
    for a punch or a device, only the data extents when zeros were written
    over a file.  ``bytes_released`` is the file's allocation freed (0 for
    devices).
    """

    path: str
    kind: Literal["file", "block"]
    method: WipeMethod
    size_bytes: int
    bytes_wiped: int
    bytes_read_back: int
    bytes_released: int
    samples: int
    seconds: float


def wipe_disk(
    path: Path, *, samples: int = DEFAULT_SAMPLES, full_readback: bool = True
) -> WipeResult:
    """Make every byte of *path* (file or block device) zero, then verify it."""
    started = time.monotonic()
    try:
        # O_EXCL on a block device is an exclusive open: EBUSY while it is
        # mounted or held by another user, so a disk in use is never wiped.
        excl = os.O_EXCL if stat.S_ISBLK(os.stat(path).st_mode) else 0
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | excl)
    except OSError as exc:
        raise WipeFailed(f"cannot open {path} to wipe it: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            kind: Literal["file", "block"] = "file"
            size = st.st_size
            method, wiped = _wipe_file(fd, size)
        elif stat.S_ISBLK(st.st_mode):
            kind = "block"
            size = os.lseek(fd, 0, os.SEEK_END)
            method, wiped = _wipe_block(fd, size)
        else:
            raise WipeFailed(f"{path} is neither a regular file nor a block device")
        os.fsync(fd)
        released = max(0, st.st_blocks - os.fstat(fd).st_blocks) * 512 if kind == "file" else 0
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        read_back = 0
        if kind == "file" or full_readback:
            read_back = _verify(fd, size, str(path), extents_only=kind == "file")
        read_back += _verify_samples(fd, size, samples, str(path))
    except WipeError:
        raise
    except OSError as exc:
        raise WipeFailed(f"wiping {path} failed: {exc.strerror}") from exc
    finally:
        os.close(fd)
    return WipeResult(
        path=str(path),
        kind=kind,
        method=method,
        size_bytes=size,
        bytes_wiped=wiped,
        bytes_read_back=read_back,
        bytes_released=released,
        samples=samples,
        seconds=time.monotonic() - started,
    )


def _punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate ``[offset, offset+length)`` of *fd*, keeping its size."""
    if length <= 0:
        return
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    if _fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _wipe_file(fd: int, size: int) -> tuple[WipeMethod, int]:
    try:
        _punch_hole(fd, 0, size)
        return "punch_hole", size
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
            raise
    wiped = 0
    for start, length in list(data_extents(fd, 0, size)):
        _write_zeros(fd, start, length)
        wiped += length
    return "zero_extents", wiped


def _wipe_block(fd: int, size: int) -> tuple[WipeMethod, int]:
    span = struct.pack("=QQ", 0, size)
    try:
        fcntl.ioctl(fd, _BLKDISCARD, span)
        discarded = True
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED | {errno.EIO}:
            raise
        discarded = False
    try:
        fcntl.ioctl(fd, _BLKZEROOUT, span)
        return ("discard_zeroout" if discarded else "zeroout"), size
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED | {errno.EIO}:
            raise
    _write_zeros(fd, 0, size)
    return "write_zeros", size


def _write_zeros(fd: int, offset: int, length: int) -> None:
    zeros = memoryview(bytes(min(CHUNK, length)))
    end = offset + length
    while offset < end:
        offset += os.pwrite(fd, zeros[: min(CHUNK, end - offset)], offset)


def _verify(fd: int, size: int, path: str, *, extents_only: bool) -> int:
    """Read the data extents (or everything) and check for zeros; bytes read.

    Only a file's extents mean something: a block device reports itself
    as one extent, so it is read whole with ``extents_only=False``.
    """
    spans = data_extents(fd, 0, size) if extents_only else iter([(0, size)])
    buf = bytearray(CHUNK)
    read = 0
    for start, length in spans:
        for off in range(start, start + length, CHUNK):
            n = read_full(fd, buf, min(CHUNK, start + length - off), off)
            _check(buf, n, off, path)
            read += n
    return read


def _verify_samples(fd: int, size: int, samples: int, path: str) -> int:
    """One ``SAMPLE_BYTES`` read at a random offset in each of *samples* strides."""
    if size == 0 or samples <= 0:
        return 0
    rng = random.Random()
    buf = bytearray(SAMPLE_BYTES)
    read = 0
    for i in range(samples):
        lo, hi = i * size // samples, (i + 1) * size // samples
        room = max(0, hi - lo - SAMPLE_BYTES)
        off = lo + rng.randrange(room + 1) // 512 * 512
        n = read_full(fd, buf, min(SAMPLE_BYTES, size - off), off)
        _check(buf, n, off, path)
        read += n
    return read


def _check(buf: bytearray, n: int, offset: int, path: str) -> None:
    if not is_zero(buf, 0, n):
        at = offset + first_nonzero(buf, n)
        raise WipeVerificationFailed(
            f"wipe of {path} did not hold: non-zero byte at offset {at}", path=path, offset=at
        )
