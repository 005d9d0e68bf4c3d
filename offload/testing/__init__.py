"""A driver-side vhost-user-blk front-end: plays the guest and its virtio driver.

Tests and benchmarks use it to talk to a vhost-user-blk back-end (``offload-blk``
or ``qemu-storage-daemon``) over the real protocol on a unix socket, the way
QEMU plus a Linux ``virtio_blk`` driver would.  It shares no code with the
card's back-end (``offload.virtio``/``offload.vhost_user``/``offload.memory``):
every ring layout and message format in this package is written again from
the specs, so the two implementations check each other.

One concern per module, each importing only those above it:

``errors``
    the exception tree (:class:`FrontendError` and below).
``protocol``
    vhost-user message types, payload codecs and the socket that carries
    them with their fds (:class:`VhostUserChannel`).
``guest_ram``
    the guest's RAM: one memfd cut into regions (:class:`DriverMemory`).
``ring``
    the driver half of a split virtqueue (:class:`SplitQueueDriver`).
``blk``
    virtio-blk requests over one queue and its eventfds (:class:`BlkQueue`,
    :func:`wait_any`).
``frontend``
    negotiation, queue setup and teardown (:class:`VhostUserBlkFrontend`).
``net``
    a vhost-user-net driver (``offload.testing.net.VhostUserNetFrontend``):
    RX buffers, TX frames behind a virtio-net header, checksum and TSO
    offloads, mergeable reassembly; import it from its module.
``tcp``
    a guest's TCP over that driver (``offload.testing.tcp.GuestTcp``), with
    TSO frames and partial checksums; import it from its module.

Import from the package; the names below are its public API.
"""

from __future__ import annotations

from offload.testing.blk import (
    BLK_ID_BYTES,
    SECTOR_SIZE,
    BlkConfig,
    BlkFeature,
    BlkQueue,
    BlkRequest,
    BlkResult,
    BlkStatus,
    BlkType,
    wait_any,
)
from offload.testing.errors import (
    BackendDisconnected,
    BackendProtocolError,
    BackendRefused,
    DeviceRingError,
    DeviceUsedIndexJumped,
    DeviceUsedUnknownHead,
    FrontendError,
    FrontendTimeout,
    QueueFull,
)
from offload.testing.frontend import VhostUserBlkFrontend
from offload.testing.guest_ram import DriverMemory
from offload.testing.protocol import MemRegion, ProtocolFeature, Request
from offload.testing.ring import (
    DESC_F_INDIRECT,
    DESC_F_NEXT,
    DESC_F_WRITE,
    USED_F_NO_NOTIFY,
    RingFeature,
    SplitQueueDriver,
    SplitRingLayout,
    vring_need_event,
)

__all__ = [
    "BLK_ID_BYTES",
    "DESC_F_INDIRECT",
    "DESC_F_NEXT",
    "DESC_F_WRITE",
    "SECTOR_SIZE",
    "USED_F_NO_NOTIFY",
    "BackendDisconnected",
    "BackendProtocolError",
    "BackendRefused",
    "BlkConfig",
    "BlkFeature",
    "BlkQueue",
    "BlkRequest",
    "BlkResult",
    "BlkStatus",
    "BlkType",
    "DeviceRingError",
    "DeviceUsedIndexJumped",
    "DeviceUsedUnknownHead",
    "DriverMemory",
    "FrontendError",
    "FrontendTimeout",
    "MemRegion",
    "ProtocolFeature",
    "QueueFull",
    "Request",
    "RingFeature",
    "SplitQueueDriver",
    "SplitRingLayout",
    "VhostUserBlkFrontend",
    "vring_need_event",
    "wait_any",
]
