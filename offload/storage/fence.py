"""Fencing a card out of its disks: Ceph's OSD blocklist, through librados.

Before a disk is opened on a new host, the old host's client must be unable
to write to it, whether that host is dead, partitioned or merely slow.  An
entry in the OSD blocklist does that cluster-wide: every OSD refuses the
client's operations (librbd fails them with ESHUTDOWN, the guest sees
VIRTIO_BLK_S_IOERR) until the entry expires.

``lock_owners`` names the clients holding an image's exclusive lock;
``fence_image`` blocklists exactly those (what failover does before the new
host opens the disk); ``blocklist`` and ``unblocklist`` act on one address.
The fence takes effect on each OSD as that OSD learns the new OSD map: a
write of the old client that reaches an OSD still on the older map lands
(it happened "before the fence").  The new owner's operations carry the new
map's epoch and an OSD first catches up to the epoch of an operation it
serves, so once the new card has opened the disk (its lock and header are
operations), no write of the old card lands after one of the new card's on
the same object.  Failover therefore fences, then opens, then writes.

Each opens its own short-lived librados client with a bounded connect time
and sends ``osd blocklist`` as a monitor command (``mon_command``), as the
``ceph`` CLI would.  Failures are one-line ``StorageError``s.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any, Final

import rados
import rbd

from offload.errors import ClusterUnreachable, StorageError, VolumeNotFound

__all__ = ["blocklist", "fence_image", "lock_owners", "unblocklist"]

#: how long a blocklist entry lasts unless said otherwise (Ceph's default: one hour)
DEFAULT_EXPIRE: Final = 3600.0


@contextlib.contextmanager
def _client(conf: str | os.PathLike[str], client_id: str, timeout: float) -> Iterator[Any]:
    cluster = rados.Rados(conffile=os.fspath(conf), rados_id=client_id)
    seconds = str(max(1, int(timeout)))
    cluster.conf_set("client_mount_timeout", seconds)
    cluster.conf_set("rados_mon_op_timeout", seconds)
    try:
        cluster.connect()
    except rados.Error as exc:
        cluster.shutdown()
        raise ClusterUnreachable(f"cannot reach the Ceph cluster of {conf}: {exc}") from exc
    try:
        yield cluster
    finally:
        cluster.shutdown()


def _blocklist_op(cluster: Any, op: str, address: str, expire: float | None) -> None:
    cmd: dict[str, object] = {"prefix": "osd blocklist", "blocklistop": op, "addr": address}
    if expire is not None:
        cmd["expire"] = float(expire)
    try:
        ret, _, err = cluster.mon_command(json.dumps(cmd), b"")
    except rados.Error as exc:
        raise StorageError(f"osd blocklist {op} {address}: {exc}") from exc
    if ret != 0:
        raise StorageError(f"osd blocklist {op} {address} failed: {err or os.strerror(-ret)}")


def blocklist(
    conf: str | os.PathLike[str],
    address: str,
    *,
    client_id: str = "admin",
    expire: float = DEFAULT_EXPIRE,
    timeout: float = 10.0,
) -> None:
    """Blocklist the client at ``address`` (``IP:PORT/NONCE``) for ``expire`` seconds."""
    with _client(conf, client_id, timeout) as cluster:
        _blocklist_op(cluster, "add", address, expire)


def unblocklist(
    conf: str | os.PathLike[str], address: str, *, client_id: str = "admin", timeout: float = 10.0
) -> None:
    """Remove ``address`` from the blocklist (idempotent)."""
    with _client(conf, client_id, timeout) as cluster:
        _blocklist_op(cluster, "rm", address, None)


def lock_owners(
    conf: str | os.PathLike[str],
    pool: str,
    image: str,
    *,
    client_id: str = "admin",
    timeout: float = 10.0,
) -> list[str]:
    """Addresses of the clients holding ``pool/image``'s exclusive lock."""
    with _client(conf, client_id, timeout) as cluster:
        return _owners(cluster, pool, image)


def _owners(cluster: Any, pool: str, image: str) -> list[str]:
    try:
        ioctx = cluster.open_ioctx(pool)
    except rados.ObjectNotFound as exc:
        raise VolumeNotFound(f"pool {pool} does not exist") from exc
    try:
        with rbd.Image(ioctx, image, read_only=True) as img:
            lockers = img.list_lockers()
    except rbd.ImageNotFound as exc:
        raise VolumeNotFound(f"image {pool}/{image} does not exist") from exc
    except rbd.Error as exc:
        raise StorageError(f"cannot list the lockers of {pool}/{image}: {exc}") from exc
    finally:
        ioctx.close()
    if not lockers:
        return []
    return [str(address) for _client_name, _cookie, address in lockers["lockers"]]


def fence_image(
    conf: str | os.PathLike[str],
    pool: str,
    image: str,
    *,
    client_id: str = "admin",
    expire: float = DEFAULT_EXPIRE,
    timeout: float = 10.0,
) -> list[str]:
    """Blocklist whoever holds ``pool/image``'s lock; returns the fenced addresses."""
    with _client(conf, client_id, timeout) as cluster:
        owners = _owners(cluster, pool, image)
        for address in owners:
            _blocklist_op(cluster, "add", address, expire)
    return owners
