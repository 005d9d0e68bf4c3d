"""The offload card's exception tree.

Every error the data plane raises derives from :class:`OffloadError`, so a
caller at an edge (the vhost-user server, the agent) can catch one type.
Errors the guest caused through its own memory or rings carry the ``Guest``
prefix on their family base class; the protocol engineer adds vhost-user
errors in ``offload.vhost_user`` as further ``OffloadError`` subclasses::

    OffloadError
    ├── MemoryTableError              front-end sent an unusable region (overlap,
    │                                 size 0, mmap failure, unknown region)
    ├── StorageError                  the volume behind a device failed (wraps OSError)
    │   ├── VolumeNotFound            the RBD pool or image does not exist
    │   ├── VolumeLocked              another live client holds the disk's exclusive lock
    │   └── ClusterUnreachable        no Ceph monitor answered within the connect timeout
    └── GuestError                    anything the guest's own memory or rings caused
        ├── GuestMemoryError
        │   └── GuestAddressOutOfRange        not inside one single region
        ├── GuestQueueError
        │   ├── GuestRingError                fatal: the queue cannot go on,
        │   │   │                             the device must go NEEDS_RESET
        │   │   ├── InvalidAvailRingIndex     avail.idx ran > queue size ahead
        │   │   ├── InvalidHeadIndex          avail ring names a head >= queue size
        │   │   └── VringAddressOutOfRange    desc/avail/used area not in memory
        │   └── GuestDescriptorError          one chain is malformed; its head is
        │       │                             consumed and completes with used len 0
        │       ├── DescriptorIndexOutOfRange
        │       ├── DescriptorChainLoop       more descriptors than the TTL allows
        │       ├── DescriptorLengthOverflow  total length >= 2**32
        │       ├── DescriptorOrderViolation  readable after writable
        │       ├── DescriptorAddressOutOfRange
        │       └── GuestIndirectTableInvalid
        └── GuestRequestError             a well-formed chain whose contents the
            │                             device cannot parse (completes with an
            │                             error status when there is a status byte)
            ├── DescriptorChainTooShort
            ├── RequestDirectionInvalid
            └── RequestHeaderInvalid

``GuestDescriptorError`` carries ``head`` so the caller can return the
consumed chain to the driver; ``GuestRingError`` means nothing about the
queue can be trusted any more.
"""

from __future__ import annotations

__all__ = [
    "DescriptorAddressOutOfRange",
    "DescriptorChainLoop",
    "DescriptorChainTooShort",
    "DescriptorIndexOutOfRange",
    "DescriptorLengthOverflow",
    "DescriptorOrderViolation",
    "GuestAddressOutOfRange",
    "GuestDescriptorError",
    "GuestError",
    "GuestIndirectTableInvalid",
    "GuestMemoryError",
    "GuestQueueError",
    "GuestRequestError",
    "GuestRingError",
    "InvalidAvailRingIndex",
    "InvalidHeadIndex",
    "MemoryTableError",
    "OffloadError",
    "RequestDirectionInvalid",
    "RequestHeaderInvalid",
    "StorageError",
    "VolumeLocked",
    "VolumeNotFound",
    "ClusterUnreachable",
    "VringAddressOutOfRange",
]


class OffloadError(Exception):
    """Base of every error raised by the offload data plane."""


class MemoryTableError(OffloadError):
    """The vhost-user front-end sent a memory region that cannot be used."""


class StorageError(OffloadError):
    """The volume behind a device failed."""


class VolumeNotFound(StorageError):
    """The RBD pool or image named does not exist."""


class VolumeLocked(StorageError):
    """Another live client holds the disk's exclusive lock (one writer per disk)."""


class ClusterUnreachable(StorageError):
    """No Ceph monitor answered within the connect timeout."""


class GuestError(OffloadError):
    """The guest caused this through its memory or its rings."""


class GuestMemoryError(GuestError):
    """A guest physical address range cannot be accessed."""


class GuestAddressOutOfRange(GuestMemoryError):
    """The range lies outside every region, or straddles two regions."""

    def __init__(self, gpa: int, length: int) -> None:
        super().__init__(f"guest range 0x{gpa:x}+0x{length:x} is not inside one region")
        self.gpa = gpa
        self.length = length


class GuestQueueError(GuestError):
    """The guest broke the split-virtqueue rules."""


class GuestRingError(GuestQueueError):
    """The ring itself is broken: the device must be reset (NEEDS_RESET)."""


class InvalidAvailRingIndex(GuestRingError):
    """avail.idx moved more than the queue size past last_avail_idx."""


class InvalidHeadIndex(GuestRingError):
    """The available ring names a head descriptor index >= the queue size."""


class VringAddressOutOfRange(GuestRingError):
    """The descriptor table, avail ring or used ring is not in guest memory."""


class GuestDescriptorError(GuestQueueError):
    """One descriptor chain is malformed; its head was consumed."""

    def __init__(self, head: int, message: str) -> None:
        super().__init__(f"chain at head {head}: {message}")
        self.head = head


class DescriptorIndexOutOfRange(GuestDescriptorError):
    """A ``next`` index points outside the descriptor (or indirect) table."""


class DescriptorChainLoop(GuestDescriptorError):
    """The chain is longer than its table allows, so it must loop."""


class DescriptorLengthOverflow(GuestDescriptorError):
    """The lengths in the chain add up to 2**32 bytes or more."""


class DescriptorOrderViolation(GuestDescriptorError):
    """A device-readable descriptor follows a device-writable one."""


class DescriptorAddressOutOfRange(GuestDescriptorError):
    """A descriptor's buffer is not inside one guest memory region."""


class GuestIndirectTableInvalid(GuestDescriptorError):
    """An indirect table breaks the spec (nested, with NEXT, bad length)."""


class GuestRequestError(GuestError):
    """A well-formed chain holds a request the device cannot parse."""


class DescriptorChainTooShort(GuestRequestError):
    """The chain has fewer bytes than the request layout needs."""


class RequestDirectionInvalid(GuestRequestError):
    """Data sits in buffers of the wrong direction for the request type."""


class RequestHeaderInvalid(GuestRequestError):
    """The request header holds values the device cannot accept."""
