"""Cloud disks in a Ceph RBD pool: what the agent does on the cluster.

With the ``rbd`` storage back-end a disk is an RBD image, not a file on the
host.  The agent does two things on the cluster, both idempotent so that a
retried or repeated reconcile pass (or another host after a failover) finds
the work done:

1. **An image is imported once** (``ensure_parent``): the boot image the
   image cache fetched and verified is written into the pool under a
   temporary name (data extents only, zero blocks skipped, so the RBD image
   stays thin), snapshotted and protected, then *renamed* to its final name.
   Renaming fails when the name exists, so two agents importing the same
   image at once never see a half-written parent: the loser removes its
   copy and uses the winner's.
2. **A boot disk is a layered clone** of that protected snapshot
   (``ensure_clone``): nothing is copied, so provisioning time does not
   grow with the image's size.  A clone that exists is reused and only
   grown to the size asked for; a failover therefore boots the instance
   from the same disk, with everything its guest wrote.

Volumes other than the boot disk are created, grown and deleted by the
control plane (they exist whatever happens to hosts); the agent only opens
them through ``offload-blk --rbd``.  Every call here blocks (librbd's
synchronous API); from asyncio use ``asyncio.to_thread``.  Errors are the
``VolumeError`` branch of ``host_agent.storage.errors``: ``CephUnavailable``
when the cluster cannot be reached within the timeout, ``VolumeIOError``
for anything else the cluster refused.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rados
import rbd

from host_agent.storage.errors import VolumeError, VolumeIOError, VolumeSizeError
from host_agent.storage.extents import data_extents, is_zero

__all__ = ["CephTarget", "CephUnavailable", "RbdPool", "parse_parent"]

#: the snapshot of an imported image that boot disks are cloned from
PARENT_SNAP = "base"
#: image features of every disk: layering for clones, exclusive-lock for one writer
FEATURES = rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK
_CHUNK = 1 << 20


class CephUnavailable(VolumeError):
    """The cluster did not answer within the timeout (monitors down or unreachable)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CephTarget:
    """Where the region's disks live: a pool of a cluster, as which client."""

    pool: str
    conf: Path
    client_id: str = "admin"


def parse_parent(spec: str) -> tuple[str, str]:
    """``"image@snap"`` -> (image, snap); ValueError names the problem."""
    name, sep, snap = spec.partition("@")
    if not sep or not name or not snap or "/" in spec:
        raise ValueError(f"rbd parent {spec!r}: expected IMAGE@SNAPSHOT")
    return name, snap


class RbdPool:
    """A connection to one pool; ``close()`` (or ``with``) disconnects."""

    def __init__(self, target: CephTarget, *, timeout: float = 10.0) -> None:
        self.target = target
        seconds = str(max(1, round(timeout)))
        self._cluster = rados.Rados(
            conffile=str(target.conf),
            rados_id=target.client_id,
            conf={
                "client_mount_timeout": seconds,
                "rados_mon_op_timeout": seconds,
                "rados_osd_op_timeout": seconds,
            },
        )
        try:
            self._cluster.connect(timeout=max(1, round(timeout)))
        except rados.Error as exc:
            self._cluster.shutdown()
            raise CephUnavailable(f"ceph ({target.conf}): cannot connect: {exc}") from exc
        try:
            self._ioctx = self._cluster.open_ioctx(target.pool)
        except rados.Error as exc:
            self._cluster.shutdown()
            raise VolumeIOError(f"ceph pool {target.pool!r}: {exc}") from exc

    def close(self) -> None:
        self._ioctx.close()
        self._cluster.shutdown()

    def __enter__(self) -> RbdPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _refused(self, what: str) -> Iterator[None]:
        try:
            yield
        except (rbd.Error, rados.Error) as exc:
            raise VolumeIOError(f"rbd {self.target.pool}/{what}: {exc}") from exc

    def exists(self, name: str) -> bool:
        with self._refused(name):
            try:
                rbd.Image(self._ioctx, name, read_only=True).close()
            except rbd.ImageNotFound:
                return False
        return True

    def size(self, name: str) -> int:
        with self._refused(name), rbd.Image(self._ioctx, name, read_only=True) as image:
            return int(image.size())

    def parent_of(self, name: str) -> str:
        """``"image@snap"`` the disk was cloned from, "" for none."""
        with self._refused(name), rbd.Image(self._ioctx, name, read_only=True) as image:
            try:
                info: dict[str, Any] = image.get_parent_image_spec()
            except rbd.ImageNotFound:
                return ""
            return f"{info['image_name']}@{info['snap_name']}"

    def ensure_parent(self, spec: str, source: Path) -> bool:
        """Make ``image@snap`` exist (imported from *source*); True if this call made it."""
        name, snap = parse_parent(spec)
        if self.exists(name):
            return False
        temp = f"{name}.import-{secrets.token_hex(4)}"
        size = source.stat().st_size
        with self._refused(temp):
            rbd.RBD().create(self._ioctx, temp, size, old_format=False, features=FEATURES)
        try:
            self._write_from(temp, source, size)
            with self._refused(temp), rbd.Image(self._ioctx, temp) as image:
                image.create_snap(snap)
                image.protect_snap(snap)
            with self._refused(name):
                try:
                    rbd.RBD().rename(self._ioctx, temp, name)
                except rbd.ImageExists:
                    self._remove_import(temp, snap)
                    return False
        except BaseException:
            with contextlib.suppress(VolumeError):
                self._remove_import(temp, snap)
            raise
        return True

    def _write_from(self, name: str, source: Path, size: int) -> None:
        fd = os.open(source, os.O_RDONLY)
        try:
            with self._refused(name), rbd.Image(self._ioctx, name) as image:
                for start, length in data_extents(fd, 0, size):
                    offset, end = start, start + length
                    while offset < end:
                        chunk = os.pread(fd, min(_CHUNK, end - offset), offset)
                        if not chunk:
                            raise VolumeIOError(f"{source}: short read at {offset}")
                        if not is_zero(chunk):
                            image.write(chunk, offset)
                        offset += len(chunk)
                image.flush()
        except OSError as exc:
            raise VolumeIOError(f"{source}: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)

    def _remove_import(self, name: str, snap: str) -> None:
        with self._refused(name):
            try:
                with rbd.Image(self._ioctx, name) as image:
                    with contextlib.suppress(rbd.ImageNotFound, rbd.InvalidArgument):
                        image.unprotect_snap(snap)
                    with contextlib.suppress(rbd.ImageNotFound):
                        image.remove_snap(snap)
                rbd.RBD().remove(self._ioctx, name)
            except rbd.ImageNotFound:
                pass

    def ensure_clone(self, name: str, parent: str, size_bytes: int) -> bool:
        """Make *name* a clone of *parent* of at least *size_bytes*; True if made now.

        An existing disk is kept whatever it holds (that is the point of a
        cloud disk) and only grown; one cloned from another parent is an
        error, never overwritten.
        """
        image_name, snap = parse_parent(parent)
        made = False
        if not self.exists(name):
            with self._refused(name):
                try:
                    rbd.RBD().clone(
                        self._ioctx, image_name, snap, self._ioctx, name, features=FEATURES
                    )
                    made = True
                except rbd.ImageExists:
                    pass
        actual = self.parent_of(name)
        if actual != parent:
            raise VolumeIOError(
                f"rbd {self.target.pool}/{name}: exists as a clone of {actual or 'nothing'}, "
                f"not of {parent}"
            )
        self.ensure_size(name, size_bytes)
        return made

    def ensure_size(self, name: str, size_bytes: int) -> None:
        """Grow *name* to *size_bytes* (never shrink: ``VolumeSizeError`` is not raised
        for a disk already larger, it is simply left as it is)."""
        if size_bytes <= 0:
            raise VolumeSizeError(f"rbd {name}: size must be positive, not {size_bytes}")
        with self._refused(name), rbd.Image(self._ioctx, name) as image:
            if image.size() < size_bytes:
                image.resize(size_bytes)

    def remove(self, name: str) -> bool:
        """Delete *name* if it exists; True if this call deleted it."""
        with self._refused(name):
            try:
                rbd.RBD().remove(self._ioctx, name)
            except rbd.ImageNotFound:
                return False
        return True
