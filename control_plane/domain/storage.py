"""Where a region's disks live: the ``[storage]`` settings and RBD names.

``file`` (the default) keeps every disk a file on its host, as the agent
has always done.  ``rbd`` puts boot disks and volumes in one Ceph pool, so
that they outlive their host.  The control plane names every RBD image and
sends the name in the agent's desired state (``DesiredVolume.rbd_image``,
``rbd_parent``); nothing else derives a name, so agents and the control
plane cannot disagree.  Names carry the tenant because resource ids are
unique only within a tenant:

- a boot disk: ``boot.<tenant>.<instance id>``
- an image's parent: ``image.<image id>`` with the protected snapshot ``base``
- a volume: ``vol.<tenant>.<volume id>``

Pure: parsing and naming only, no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from control_plane.domain.errors import InvalidArgument

#: the snapshot of an imported image that boot disks are cloned from
PARENT_SNAP = "base"
#: default seconds a host stays UNREACHABLE before its instance moves
DEFAULT_FAILOVER_GRACE = 60.0


class Backend(enum.StrEnum):
    FILE = "file"
    RBD = "rbd"


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageConfig:
    backend: Backend = Backend.FILE
    pool: str = ""
    ceph_conf: str = ""
    client_id: str = "admin"
    #: seconds a host stays UNREACHABLE before its instance is restarted elsewhere
    failover_grace: float = DEFAULT_FAILOVER_GRACE

    @property
    def rbd(self) -> bool:
        return self.backend == Backend.RBD


def parse_storage(raw: Mapping[str, Any] | None, *, where: str = "[storage]") -> StorageConfig:
    """The ``[storage]`` table of a TOML file; ``InvalidArgument`` names the setting."""
    if raw is None:
        return StorageConfig()
    if not isinstance(raw, Mapping):
        raise InvalidArgument(f"{where}: expected a table, got {raw!r}")
    known = {"backend", "pool", "ceph_conf", "client_id", "failover_grace"}
    for key in raw:
        if key not in known:
            raise InvalidArgument(f"{where}: unknown setting {key!r}")
    backend = raw.get("backend", "file")
    if backend not in ("file", "rbd"):
        raise InvalidArgument(f"{where}.backend: {backend!r} is not 'file' or 'rbd'")
    strings: dict[str, str] = {}
    for key in ("pool", "ceph_conf", "client_id"):
        value = raw.get(key, "admin" if key == "client_id" else "")
        if not isinstance(value, str):
            raise InvalidArgument(f"{where}.{key}: expected a string, got {value!r}")
        strings[key] = value
    grace = raw.get("failover_grace", DEFAULT_FAILOVER_GRACE)
    if isinstance(grace, bool) or not isinstance(grace, int | float) or grace < 0:
        raise InvalidArgument(f"{where}.failover_grace: expected seconds >= 0, got {grace!r}")
    if backend == "rbd":
        for key in ("pool", "ceph_conf", "client_id"):
            if not strings[key]:
                raise InvalidArgument(f'{where}.{key}: required with backend = "rbd"')
    return StorageConfig(backend=Backend(backend), failover_grace=float(grace), **strings)


def boot_image(tenant: str, instance_id: str) -> str:
    return f"boot.{tenant}.{instance_id}"


def parent_image(image_id: str) -> str:
    """``IMAGE@SNAP`` boot disks of *image_id* are cloned from."""
    return f"image.{image_id}@{PARENT_SNAP}"


def volume_image(tenant: str, volume_id: str) -> str:
    return f"vol.{tenant}.{volume_id}"
