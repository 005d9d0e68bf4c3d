"""Instance types, images and instances.

An instance rents one whole host.  ``instance_type`` names the host class it
needs; ``state``/``target_state`` follow ``lifecycle.INSTANCE_TRANSITIONS``
and ``INSTANCE_TARGETS``; ``host`` is set (``hosts/{h}``) by the scheduler in
the same etcd transaction that marks the host ALLOCATED.  References to other
resources are full AIP names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from control_plane.domain.conditions import Condition
from control_plane.domain.lifecycle import InstanceState
from control_plane.domain.names import instance_name, make_name


class MetadataTokens(enum.Enum):
    """Whether the card's metadata service demands an IMDSv2 session token.
    REQUIRED is the default: a GET without a token is what a server-side
    request forgery in the guest can be made to send (docs/offload.md)."""

    REQUIRED = "required"
    OPTIONAL = "optional"


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceType:
    COLLECTION: ClassVar[str] = "instanceTypes"

    id: str
    host_class: str
    cpus: int
    memory_gib: int
    description: str = ""
    etag: str = ""
    create_time: float = 0.0
    update_time: float = 0.0

    @property
    def name(self) -> str:
        return make_name("instanceTypes", self.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    COLLECTION: ClassVar[str] = "images"

    id: str
    display_name: str = ""
    os: str = "linux"
    source: str = ""
    size_gib: int = 10
    checksum: str = ""
    etag: str = ""
    create_time: float = 0.0
    update_time: float = 0.0

    @property
    def name(self) -> str:
        return make_name("images", self.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Instance:
    COLLECTION: ClassVar[str] = "instances"

    tenant: str
    id: str
    instance_type: str
    image: str
    subnet: str = ""
    zone: str = ""
    volumes: tuple[str, ...] = ()
    network_interfaces: tuple[str, ...] = ()
    user_data: str = ""
    ssh_keys: tuple[str, ...] = ()
    placement_group: str = ""
    metadata_tokens: MetadataTokens = MetadataTokens.REQUIRED
    state: InstanceState = InstanceState.PENDING
    target_state: InstanceState = InstanceState.RUNNING
    host: str = ""
    conditions: tuple[Condition, ...] = ()
    failure_reason: str = ""
    #: desired-state generation: bumped by stop/start/reboot; agents report the
    #: generation they converged to, so a stale report never completes an action
    generation: int = 0
    request_id: str = ""
    etag: str = ""
    create_time: float = 0.0
    update_time: float = 0.0

    @property
    def name(self) -> str:
        return instance_name(self.tenant, self.id)
