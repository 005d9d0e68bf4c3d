"""Where a file's data is, and writing without filling holes.

``data_extents`` asks the file system with ``lseek(SEEK_DATA)`` /
``lseek(SEEK_HOLE)``: starting at an offset, SEEK_DATA jumps to the next
byte backed by data (ENXIO when there is none before end of file) and
SEEK_HOLE from there to the end of that run.  Holes read as zeros, so code
that copies, hashes or verifies a file only reads the extents and treats
everything else as zeros.  A file system without hole support reports the
whole file as one extent, which is slower but still correct.

``write_sparse`` is the other half: it writes a buffer in ``BLOCK``-sized
pieces and skips the pieces that are all zeros, so a fresh file keeps a hole
there.  Zero tests use ``bytearray.startswith`` against a zero block (a
memcmp, no copy); comparing memoryviews would be 50x slower.

All functions block; they take raw fds and positional offsets only.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

__all__ = [
    "BLOCK",
    "CHUNK",
    "data_extents",
    "first_nonzero",
    "fsync_dir",
    "is_zero",
    "read_full",
    "write_sparse",
]

BLOCK = 64 << 10  # granularity at which zeros become holes
CHUNK = 1 << 20  # read/write unit: a multiple of BLOCK
_ZERO_BLOCK = bytes(BLOCK)


def data_extents(fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` of each data run of *fd* within ``[start, end)``."""
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole up to end of file
                return
            if exc.errno == errno.EINVAL and pos == start:  # no SEEK_DATA here
                yield start, end - start
                return
            raise
        if data >= end:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        yield data, hole - data
        pos = hole


def is_zero(buf: bytes | bytearray, start: int = 0, end: int | None = None) -> bool:
    """Whether ``buf[start:end]`` is all zero bytes (without copying it)."""
    stop = len(buf) if end is None else end
    pos = start
    while pos + BLOCK <= stop:
        if not buf.startswith(_ZERO_BLOCK, pos):
            return False
        pos += BLOCK
    return pos >= stop or buf.startswith(_ZERO_BLOCK[: stop - pos], pos)


def first_nonzero(buf: bytes | bytearray, length: int) -> int:
    """Index of the first non-zero byte in ``buf[:length]``, or -1."""
    head = bytes(buf[:length])
    rest = head.lstrip(b"\0")
    return -1 if not rest else length - len(rest)


def read_full(fd: int, buf: bytearray, length: int, offset: int) -> int:
    """``pread`` into ``buf[:length]`` until full or end of file; the bytes read."""
    view = memoryview(buf)
    done = 0
    while done < length:
        n = os.preadv(fd, [view[done:length]], offset + done)
        if n == 0:
            break
        done += n
    return done


def write_sparse(fd: int, buf: bytes | bytearray, length: int, offset: int) -> int:
    """Write ``buf[:length]`` at *offset*, skipping all-zero ``BLOCK``s; bytes written.

    The skipped ranges stay holes only in a file that had nothing there; the
    caller sets the final size with ``ftruncate`` (a trailing hole is never
    written).
    """
    view = memoryview(buf)
    written = 0
    pos = 0
    while pos < length:
        # Coalesce consecutive non-zero blocks into one pwrite.
        while pos < length and is_zero(buf, pos, min(pos + BLOCK, length)):
            pos += BLOCK
        run = pos
        while run < length and not is_zero(buf, run, min(run + BLOCK, length)):
            run += BLOCK
        run = min(run, length)
        while pos < run:
            n = os.pwrite(fd, view[pos:run], offset + pos)
            pos += n
            written += n
    return written


def fsync_dir(path: os.PathLike[str] | str) -> None:
    """fsync a directory so a rename or link in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
