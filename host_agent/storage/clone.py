"""Instance volumes: clone one from an image, create an empty one, grow one.

``clone_volume`` tries the cheapest way the file system offers and falls
through on "not supported" errors only:

1. ``FICLONE`` (reflink): the new file shares every extent with the image,
   nothing is copied (btrfs, XFS with reflink, bcachefs; ext4 says
   EOPNOTSUPP);
2. ``os.copy_file_range`` over the image's data extents only, found with
   SEEK_DATA/SEEK_HOLE: the kernel copies (or offloads, on NFS and friends)
   and the holes between extents are never written, so they stay holes;
3. a read/write copy of the data extents that also skips zero blocks inside
   them (``extents.write_sparse``).

Then ``ftruncate`` extends the clone to the requested size (a hole).  The
work happens in ``.<name>.clone-<random>`` next to the destination, which is
fsynced and then *linked* to the final name (``link`` fails if the name
exists, so a volume is never overwritten, unlike ``rename``) before the temp
name is removed and the directory fsynced.  A crash leaves at most a temp
file, never a half clone under the final name.

Everything here blocks; from asyncio use ``asyncio.to_thread``.  Errors are
the ``VolumeError`` branch of ``errors``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from host_agent.storage.errors import VolumeExists, VolumeIOError, VolumeSizeError
from host_agent.storage.extents import CHUNK, data_extents, fsync_dir, read_full, write_sparse

__all__ = ["CloneMethod", "CloneResult", "clone_volume", "create_volume", "grow_volume"]

CloneMethod = Literal["reflink", "copy_file_range", "sparse_copy"]

_FICLONE = 0x40049409  # _IOW(0x94, 9, int)
# What "this file system (pair) cannot do that" looks like for FICLONE and
# copy_file_range; anything else is a real error.
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS}


@dataclass(frozen=True)
class CloneResult:
    """How a clone was made: the method, bytes physically copied, final size."""

    method: CloneMethod
    bytes_copied: int
    size_bytes: int


class _Unsupported(Exception):
    """The current method is not available here; try the next one."""


def clone_volume(src: Path, dst: Path, *, size_bytes: int) -> CloneResult:
    """Create *dst* (of *size_bytes*) holding *src*'s bytes, sharing or skipping what it can."""
    try:
        src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise VolumeIOError(f"cannot open image {src}: {exc.strerror}") from exc
    try:
        st = os.fstat(src_fd)
        if not stat.S_ISREG(st.st_mode):
            raise VolumeIOError(f"image {src} is not a regular file")
        if size_bytes < st.st_size:
            raise VolumeSizeError(
                f"volume size {size_bytes} bytes is smaller than the image ({st.st_size} bytes)"
            )
        with _staged(dst) as dst_fd:
            method, copied = _copy(src_fd, dst_fd, st.st_size)
            os.ftruncate(dst_fd, size_bytes)
    except OSError as exc:
        raise VolumeIOError(f"cannot clone {src} to {dst}: {exc.strerror}") from exc
    finally:
        os.close(src_fd)
    return CloneResult(method=method, bytes_copied=copied, size_bytes=size_bytes)


def create_volume(path: Path, size_bytes: int) -> None:
    """Create an empty (all-hole) volume of *size_bytes* at *path*; never overwrites."""
    if size_bytes < 0:
        raise VolumeSizeError(f"volume size {size_bytes} bytes is negative")
    try:
        with _staged(path) as fd:
            os.ftruncate(fd, size_bytes)
    except OSError as exc:
        raise VolumeIOError(f"cannot create volume {path}: {exc.strerror}") from exc


def grow_volume(path: Path, size_bytes: int) -> None:
    """Extend *path* to *size_bytes* (a hole); same size is a no-op, smaller is an error."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise VolumeIOError(f"cannot open volume {path}: {exc.strerror}") from exc
    try:
        current = os.fstat(fd).st_size
        if size_bytes < current:
            raise VolumeSizeError(
                f"volume {path.name} cannot shrink from {current} to {size_bytes} bytes"
            )
        if size_bytes > current:
            os.ftruncate(fd, size_bytes)
            os.fsync(fd)
    except OSError as exc:
        raise VolumeIOError(f"cannot grow volume {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)


@contextlib.contextmanager
def _staged(dst: Path) -> Iterator[int]:
    """An fd on a temp file beside *dst*, published as *dst* if the body succeeds."""
    if os.path.lexists(dst):
        raise VolumeExists(f"volume {dst} already exists")
    tmp = dst.parent / f".{dst.name}.clone-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        yield fd
        os.fsync(fd)
        os.close(fd)
        fd = -1
        try:
            os.link(tmp, dst)
        except FileExistsError as exc:
            raise VolumeExists(f"volume {dst} already exists") from exc
        fsync_dir(dst.parent)
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _copy(src: int, dst: int, size: int) -> tuple[CloneMethod, int]:
    """Fill the empty *dst* with *src*'s first *size* bytes by the best method."""
    try:
        fcntl.ioctl(dst, _FICLONE, src)
        return "reflink", 0
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
    try:
        return "copy_file_range", _copy_ranges(src, dst, size)
    except _Unsupported:
        os.ftruncate(dst, 0)  # drop whatever a partial attempt wrote
    return "sparse_copy", _copy_sparse(src, dst, size)


def _copy_ranges(src: int, dst: int, size: int) -> int:
    copied = 0
    for start, length in data_extents(src, 0, size):
        pos, end = start, start + length
        while pos < end:
            try:
                n = os.copy_file_range(src, dst, end - pos, pos, pos)
            except OSError as exc:
                if exc.errno in _UNSUPPORTED:
                    raise _Unsupported from exc
                raise
            if n == 0:  # the source shrank under us
                return copied
            pos += n
            copied += n
    return copied


def _copy_sparse(src: int, dst: int, size: int) -> int:
    buf = bytearray(CHUNK)
    written = 0
    for start, length in data_extents(src, 0, size):
        for off in range(start, start + length, CHUNK):
            n = read_full(src, buf, min(CHUNK, start + length - off), off)
            written += write_sparse(dst, buf, n, off)
    return written
