"""Cloud volumes (served by the card as vhost-user-blk).  ``size_gib`` counts
against the tenant's ``max_volume_gib`` quota from create until delete.
With the rbd storage back-end the disk is an RBD image the storage
controller creates, grows and deletes (``control_plane.storage``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from control_plane.domain.conditions import Condition
from control_plane.domain.names import volume_name


@dataclass(frozen=True, slots=True, kw_only=True)
class Volume:
    COLLECTION: ClassVar[str] = "volumes"

    tenant: str
    id: str
    size_gib: int
    zone: str = ""
    image: str = ""
    #: QoS enforced by the card's block back-end; 0 = unlimited (MB/s: 10^6 B/s)
    max_iops: int = 0
    max_mbps: int = 0
    attached_to: str = ""
    request_id: str = ""
    #: ``Provisioned`` (rbd back-end): False with the reason while the storage
    #: controller cannot make the disk (Ceph unreachable), True once it exists
    conditions: tuple[Condition, ...] = ()
    etag: str = ""
    create_time: float = 0.0
    update_time: float = 0.0

    @property
    def name(self) -> str:
        return volume_name(self.tenant, self.id)
