"""A driver-side vhost-user-blk front-end: plays the guest and its virtio driver.

Tests and benchmarks use it to talk to a vhost-user-blk back-end (``offload-blk``
or ``qemu-storage-daemon``) over the real protocol on a unix socket, the way
QEMU plus a Linux ``virtio_blk`` driver would.  It shares no code with the
card's back-end (``offload.virtio``/``offload.vhost_user``): every ring layout
and message format below is written here again from the specs, so the two
implementations check each other.

How it works
------------
*Guest memory* (:class:`DriverMemory`) is one ``os.memfd_create`` file mapped
once with ``mmap``.  It is cut into regions, each announced to the back-end in
``SET_MEM_TABLE`` with its own copy of the memfd (``SCM_RIGHTS``), a guest
physical base, a made-up front-end virtual base (``userspace_addr``) and an
``mmap_offset`` into the file.  By default there are two regions with a hole
between them and distinct GPA/UVA/offset values, so a back-end that mixes up
the three address spaces fails loudly.  Region 0 holds the rings and request
headers, region 1 the data buffers.  Allocation is a bump allocator: the
layout is fixed at connect time and nothing is freed until ``close()``.

*Split virtqueues* (:class:`SplitQueueDriver`) follow virtio 1.2 section 2.7
from the driver's side: descriptor table (16 bytes/entry), available ring
(flags, idx, ring[N], used_event) and used ring (flags, idx, {id, len}[N],
avail_event) packed at their minimum alignments (16, 2, 4) in guest memory,
all little-endian via ``struct``.  Free descriptors sit on a Python stack;
``add()`` pops a chain (or one descriptor pointing at a per-head indirect
table when INDIRECT_DESC is negotiated), writes it and its avail slot, and
``publish()`` stores ``avail.idx`` once per batch.  ``harvest()`` walks the
used ring from the last seen index, returns every chain's descriptors to the
stack, and refuses device mistakes (unknown head, idx jumping past what is in
flight).  Indices are free-running 16-bit counters; slots are ``idx & (N-1)``.
With EVENT_IDX the driver kicks only when ``vring_need_event`` says so and
asks for an interrupt at the next completion; a lock round-trip provides the
full memory barrier needed between publishing and reading the other side's
event index (a LOCK-prefixed instruction on x86).

*The vhost-user connection* (:class:`VhostUserBlkFrontend`) speaks the
front-end half of QEMU's ``docs/interop/vhost-user.rst``: 12-byte header
(request, flags with version 1 / REPLY / NEED_REPLY, size) then payload;
negotiation (GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM,
SET_OWNER, GET_CONFIG, SET_FEATURES), then SET_MEM_TABLE and per queue
SET_VRING_NUM/BASE/ADDR/KICK/CALL and SET_VRING_ENABLE.  With REPLY_ACK every
set-style message asks for an ack and a non-zero ack raises.  ``close()``
sends GET_VRING_BASE for every queue (recording the index the back-end
reports), then closes the socket, the eventfds and the memfd.

*virtio-blk requests* (:class:`BlkQueue`) live in per-queue slots, each with a
preallocated 16-byte header, a status byte and a data buffer in guest memory.
A request is header (device-readable), data (readable for OUT, segments for
DISCARD/WRITE_ZEROES; writable for IN and GET_ID), status (writable).  The
batch API (:meth:`BlkQueue.run`) submits up to ``depth`` requests, kicks
once, waits on the call eventfd and harvests; the fast path
(:meth:`BlkQueue.submit_io` / :meth:`BlkQueue.wait`) copies nothing and is
what the benchmark uses.  One :class:`BlkQueue` belongs to one thread;
different queues may be driven from different threads, or from one thread
with :func:`wait_any`.

Errors::

    FrontendError
    ├── BackendDisconnected       the socket closed under us
    ├── BackendProtocolError      a reply we cannot accept (header, size, request)
    ├── BackendRefused            REPLY_ACK non-zero, or a feature we require is missing
    ├── FrontendTimeout           no reply / no completion in time
    ├── QueueFull                 no free descriptor or request slot
    └── DeviceRingError           the device broke the used ring
        ├── DeviceUsedIndexJumped     used.idx moved past what is in flight
        └── DeviceUsedUnknownHead     a used element names a head not in flight
"""

from __future__ import annotations

import contextlib
import enum
import mmap
import os
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

__all__ = [
    "BLK_ID_BYTES",
    "SECTOR_SIZE",
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

# --------------------------------------------------------------------------- errors


class FrontendError(Exception):
    """Base of every error the driver-side front-end raises."""


class BackendDisconnected(FrontendError):
    """The back-end closed the vhost-user socket."""


class BackendProtocolError(FrontendError):
    """The back-end sent a reply that breaks the vhost-user protocol."""


class BackendRefused(FrontendError):
    """The back-end nacked a message or lacks a feature we require."""


class FrontendTimeout(FrontendError):
    """A reply or a completion did not arrive in time."""


class QueueFull(FrontendError):
    """No free descriptors or request slots are left on this queue."""


class DeviceRingError(FrontendError):
    """The device wrote something impossible into the used ring."""


class DeviceUsedIndexJumped(DeviceRingError):
    """used.idx advanced by more entries than the driver has in flight."""


class DeviceUsedUnknownHead(DeviceRingError):
    """A used element names a descriptor head that is not in flight."""


# --------------------------------------------------------------------------- constants


class Request(enum.IntEnum):
    """Front-end message types (vhost-user.rst, "Front-end message types")."""

    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    GET_QUEUE_NUM = 17
    SET_VRING_ENABLE = 18
    GET_CONFIG = 24
    SET_CONFIG = 25


class ProtocolFeature(enum.IntEnum):
    """Bit numbers of vhost-user protocol features."""

    MQ = 0
    LOG_SHMFD = 1
    RARP = 2
    REPLY_ACK = 3
    MTU = 4
    BACKEND_REQ = 5
    CROSS_ENDIAN = 6
    CRYPTO_SESSION = 7
    PAGEFAULT = 8
    CONFIG = 9
    BACKEND_SEND_FD = 10
    HOST_NOTIFIER = 11
    INFLIGHT_SHMFD = 12
    RESET_DEVICE = 13
    INBAND_NOTIFICATIONS = 14
    CONFIGURE_MEM_SLOTS = 15
    STATUS = 16


class RingFeature(enum.IntEnum):
    """Device-independent feature bits (virtio 1.2 section 6) plus vhost-user's bit 30."""

    NOTIFY_ON_EMPTY = 24
    INDIRECT_DESC = 28
    EVENT_IDX = 29
    PROTOCOL_FEATURES = 30  # VHOST_USER_F_PROTOCOL_FEATURES
    VERSION_1 = 32
    ACCESS_PLATFORM = 33
    RING_PACKED = 34
    IN_ORDER = 35


class BlkFeature(enum.IntEnum):
    """virtio-blk feature bits (virtio 1.2 section 5.2.3)."""

    SIZE_MAX = 1
    SEG_MAX = 2
    GEOMETRY = 4
    RO = 5
    BLK_SIZE = 6
    FLUSH = 9
    TOPOLOGY = 10
    CONFIG_WCE = 11
    MQ = 12
    DISCARD = 13
    WRITE_ZEROES = 14


class BlkType(enum.IntEnum):
    """virtio-blk request types."""

    IN = 0
    OUT = 1
    FLUSH = 4
    GET_ID = 8
    DISCARD = 11
    WRITE_ZEROES = 13


class BlkStatus(enum.IntEnum):
    """virtio-blk status byte values."""

    OK = 0
    IOERR = 1
    UNSUPP = 2


SECTOR_SIZE = 512
BLK_ID_BYTES = 20
WRITE_ZEROES_FLAG_UNMAP = 1

VHOST_USER_VERSION = 0x1
FLAG_VERSION_MASK = 0x3
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8
VRING_NOFD = 0x100  # in SET_VRING_KICK/CALL payloads: no fd attached
MAX_MEM_REGIONS = 8
MAX_CONFIG_SIZE = 256

DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4
USED_F_NO_NOTIFY = 1  # used.flags: device asks not to be kicked (no EVENT_IDX)

# Little-endian wire and ring formats.
_HDR = struct.Struct("<III")  # request, flags, size
_U64 = struct.Struct("<Q")
_STATE = struct.Struct("<II")  # vring index, num
_ADDR = struct.Struct("<IIQQQQ")  # index, flags, desc, used, avail, log (front-end VAs)
_MEM_HEAD = struct.Struct("<II")  # nregions, padding
_MEM_REGION = struct.Struct("<QQQQ")  # gpa, size, userspace_addr, mmap_offset
_CONFIG_HEAD = struct.Struct("<III")  # offset, size, flags
_DESC = struct.Struct("<QIHH")  # addr, len, flags, next
_BLK_HDR = struct.Struct("<IIQ")  # type, reserved, sector
_BLK_SEG = struct.Struct("<QII")  # sector, num_sectors, flags

# Features this driver understands and will accept when offered.
_RING_FEATURES_ALWAYS = (1 << RingFeature.VERSION_1) | (1 << RingFeature.PROTOCOL_FEATURES)
_BLK_FEATURES = sum(
    1 << bit
    for bit in (
        BlkFeature.SIZE_MAX,
        BlkFeature.SEG_MAX,
        BlkFeature.GEOMETRY,
        BlkFeature.RO,
        BlkFeature.BLK_SIZE,
        BlkFeature.FLUSH,
        BlkFeature.TOPOLOGY,
        BlkFeature.MQ,
        BlkFeature.DISCARD,
        BlkFeature.WRITE_ZEROES,
    )
)
_PROTOCOL_WANTED = (
    (1 << ProtocolFeature.MQ) | (1 << ProtocolFeature.REPLY_ACK) | (1 << ProtocolFeature.CONFIG)
)


def vring_need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """True if moving an index from *old_idx* to *new_idx* crossed *event_idx* (mod 2**16)."""
    return ((new_idx - event_idx - 1) & 0xFFFF) < ((new_idx - old_idx) & 0xFFFF)


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


# --------------------------------------------------------------------------- guest memory


@dataclass(frozen=True)
class MemRegion:
    """One region of the memfd as announced in SET_MEM_TABLE."""

    gpa: int
    size: int
    uva: int
    offset: int  # mmap_offset into the memfd


class DriverMemory:
    """The guest's RAM: one memfd, mapped once, split into regions, bump-allocated.

    Region sizes are rounded up to 2 MiB.  ``view`` is the shared mapping; the
    back-end maps the same pages through its copy of the fd.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        gpa_base: int = 0x4000_0000,
        uva_base: int = 0x7F3A_0000_0000,
        hole: int = 0x1000_0000,
        offset_base: int = 0x20_0000,
    ) -> None:
        if not 1 <= len(sizes) <= MAX_MEM_REGIONS:
            raise ValueError(f"need 1..{MAX_MEM_REGIONS} regions, got {len(sizes)}")
        regions: list[MemRegion] = []
        gpa, uva, offset = gpa_base, uva_base, offset_base
        for size in sizes:
            size = _align(max(size, 1), 0x20_0000)
            regions.append(MemRegion(gpa=gpa, size=size, uva=uva, offset=offset))
            gpa += size + hole
            uva += size + 2 * hole
            offset += size
        self.regions: tuple[MemRegion, ...] = tuple(regions)
        self.file_size = offset
        self.fd = os.memfd_create("bmaas-driver-ram", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, self.file_size)
            self.view = mmap.mmap(self.fd, self.file_size, flags=mmap.MAP_SHARED)
        except BaseException:
            os.close(self.fd)
            raise
        if sys.byteorder != "little":
            raise RuntimeError("ring indices use native 16/32-bit accesses: little-endian only")
        # Whole-word views: ring indices must be read and written with one
        # aligned load/store each (struct's "<H" moves bytes one at a time, so
        # the other side could see a torn index).
        self.u16 = memoryview(self.view).cast("H")
        self.u32 = memoryview(self.view).cast("I")
        self._next = [r.gpa for r in self.regions]
        self._closed = False

    def alloc(self, size: int, *, align: int = 64, region: int = 0) -> int:
        """Reserve *size* bytes in *region*; returns the guest physical address."""
        reg = self.regions[region]
        gpa = _align(self._next[region], align)
        if gpa + size > reg.gpa + reg.size:
            raise MemoryError(f"region {region} exhausted ({size} bytes wanted)")
        self._next[region] = gpa + size
        return gpa

    def _region_of(self, gpa: int, length: int) -> MemRegion:
        for reg in self.regions:
            if reg.gpa <= gpa and gpa + length <= reg.gpa + reg.size:
                return reg
        raise ValueError(f"0x{gpa:x}+{length} is not inside one region")

    def offset(self, gpa: int, length: int = 1) -> int:
        """File/mapping offset of guest physical address *gpa*."""
        reg = self._region_of(gpa, length)
        return reg.offset + (gpa - reg.gpa)

    def uva(self, gpa: int) -> int:
        """The front-end virtual address we told the back-end for *gpa*."""
        reg = self._region_of(gpa, 1)
        return reg.uva + (gpa - reg.gpa)

    def read(self, gpa: int, length: int) -> bytes:
        off = self.offset(gpa, length)
        return self.view[off : off + length]

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        off = self.offset(gpa, len(data))
        self.view[off : off + len(data)] = data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.u16.release()
        self.u32.release()
        # A caller may still hold a slot view; the mapping then goes when it does.
        with contextlib.suppress(BufferError):
            self.view.close()
        os.close(self.fd)


# --------------------------------------------------------------------------- split virtqueue


@dataclass(frozen=True)
class SplitRingLayout:
    """Where one split virtqueue's three parts live (guest physical addresses)."""

    size: int
    desc: int
    avail: int
    used: int

    @staticmethod
    def desc_bytes(size: int) -> int:
        return 16 * size

    @staticmethod
    def avail_bytes(size: int) -> int:
        return 6 + 2 * size  # flags, idx, ring[size], used_event

    @staticmethod
    def used_bytes(size: int) -> int:
        return 6 + 8 * size  # flags, idx, ring[size]{id,len}, avail_event

    @classmethod
    def total_bytes(cls, size: int) -> int:
        """Bytes :meth:`packed` needs starting at a 16-byte aligned base."""
        used = _align(cls.desc_bytes(size) + cls.avail_bytes(size), 4)
        return used + cls.used_bytes(size)

    @classmethod
    def packed(cls, size: int, base: int) -> SplitRingLayout:
        """Desc, avail and used back to back at their minimum alignments (16, 2, 4)."""
        if size <= 0 or size & (size - 1) or size > 32768:
            raise ValueError(f"split queue size must be a power of 2 <= 32768, got {size}")
        if base % 16:
            raise ValueError("descriptor table must be 16-byte aligned")
        avail = base + cls.desc_bytes(size)
        used = _align(avail + cls.avail_bytes(size), 4)
        return cls(size=size, desc=base, avail=avail, used=used)

    @property
    def used_event(self) -> int:
        """Address of avail->used_event (driver-written, EVENT_IDX)."""
        return self.avail + 4 + 2 * self.size

    @property
    def avail_event(self) -> int:
        """Address of used->avail_event (device-written, EVENT_IDX)."""
        return self.used + 4 + 8 * self.size


Segment = tuple[int, int, bool]  # (gpa, length, device_writable)


class SplitQueueDriver:
    """The driver half of one split virtqueue living in :class:`DriverMemory`.

    Tokens are small ints chosen by the caller (the request slot); they come
    back from :meth:`harvest` with the used length.
    """

    def __init__(
        self,
        mem: DriverMemory,
        layout: SplitRingLayout,
        *,
        event_idx: bool = False,
        indirect_max: int = 0,
        start_index: int = 0,
        name: str = "vq",
    ) -> None:
        self.name = name
        self.mem = mem
        self.layout = layout
        self.size = layout.size
        self.event_idx = event_idx
        self._mask = layout.size - 1
        buf = mem.view
        self._buf = buf
        self._desc_off = mem.offset(layout.desc, SplitRingLayout.desc_bytes(layout.size))
        self._avail_off = mem.offset(layout.avail, SplitRingLayout.avail_bytes(layout.size))
        self._used_off = mem.offset(layout.used, SplitRingLayout.used_bytes(layout.size))
        # Element indices into mem.u16 / mem.u32 (avail is 2-, used 4-aligned).
        self._u16 = mem.u16
        self._u32 = mem.u32
        self._avail_flags_i = self._avail_off // 2
        self._avail_idx_i = self._avail_off // 2 + 1
        self._avail_ring_i = self._avail_off // 2 + 2
        self._used_event_i = self._avail_off // 2 + 2 + self.size
        self._used_flags_i = self._used_off // 2
        self._used_idx_i = self._used_off // 2 + 1
        self._used_ring_i = self._used_off // 4 + 1  # in u32 units; elem = (id, len)
        self._avail_event_i = self._used_off // 2 + 2 + 4 * self.size
        # Indirect tables: one per head, indirect_max entries each.
        self.indirect_max = indirect_max
        self._indirect_gpa = 0
        self._indirect_off = 0
        if indirect_max:
            nbytes = 16 * indirect_max * self.size
            self._indirect_gpa = mem.alloc(nbytes, align=16)
            self._indirect_off = mem.offset(self._indirect_gpa, nbytes)
        # Fresh ring state: everything zero except the two free-running indices.
        buf[self._desc_off : self._desc_off + SplitRingLayout.desc_bytes(self.size)] = bytes(
            SplitRingLayout.desc_bytes(self.size)
        )
        start = start_index & 0xFFFF
        u16 = self._u16
        u16[self._avail_flags_i] = 0
        u16[self._avail_idx_i] = start
        u16[self._used_flags_i] = 0
        u16[self._used_idx_i] = start
        u16[self._used_event_i] = start
        # Device-owned, but its initial content is ours: "kick me at the first
        # new entry", as a zeroed ring says for start 0.
        u16[self._avail_event_i] = start
        self.start_index = start
        self.avail_idx = start  # next value to publish
        self._shadow_avail = start  # avail slots written, not yet published
        self.last_used = start
        self._free: list[int] = list(range(self.size - 1, -1, -1))
        self._chains: list[list[int] | None] = [None] * self.size
        self._tokens: list[int] = [0] * self.size
        self.in_flight = 0
        self._fence = threading.Lock()

    # -- free list -------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        return len(self._free)

    def descriptors_needed(self, nsegs: int) -> int:
        """Descriptors a request of *nsegs* buffers consumes from the table."""
        if self.indirect_max and 1 < nsegs <= self.indirect_max:
            return 1
        return nsegs

    # -- submission ------------------------------------------------------------------------
    def add(self, segments: Sequence[Segment], token: int) -> int:
        """Write one chain and its avail slot (not yet visible); returns the head index.

        Device-readable segments must come before device-writable ones.
        """
        nsegs = len(segments)
        if nsegs == 0:
            raise ValueError("a chain needs at least one buffer")
        pack = _DESC.pack_into
        buf = self._buf
        free = self._free
        if self.indirect_max and 1 < nsegs <= self.indirect_max:
            if not free:
                raise QueueFull("no free descriptors")
            head = free.pop()
            table_off = self._indirect_off + 16 * self.indirect_max * head
            last = nsegs - 1
            for i, (gpa, length, writable) in enumerate(segments):
                flags = (DESC_F_WRITE if writable else 0) | (DESC_F_NEXT if i < last else 0)
                pack(buf, table_off + 16 * i, gpa, length, flags, i + 1 if i < last else 0)
            table_gpa = self._indirect_gpa + 16 * self.indirect_max * head
            pack(buf, self._desc_off + 16 * head, table_gpa, 16 * nsegs, DESC_F_INDIRECT, 0)
            chain = [head]
        else:
            if len(free) < nsegs:
                raise QueueFull(f"{nsegs} descriptors wanted, {len(free)} free")
            chain = free[-nsegs:]
            chain.reverse()
            del free[-nsegs:]
            desc_off = self._desc_off
            last = nsegs - 1
            for i, (gpa, length, writable) in enumerate(segments):
                if i < last:
                    flags = DESC_F_NEXT | (DESC_F_WRITE if writable else 0)
                    nxt = chain[i + 1]
                else:
                    flags = DESC_F_WRITE if writable else 0
                    nxt = 0
                pack(buf, desc_off + 16 * chain[i], gpa, length, flags, nxt)
            head = chain[0]
        self._chains[head] = chain
        self._tokens[head] = token
        slot = self._shadow_avail & self._mask
        self._u16[self._avail_ring_i + slot] = head
        self._shadow_avail = (self._shadow_avail + 1) & 0xFFFF
        self.in_flight += 1
        return head

    def barrier(self) -> None:
        """Full memory barrier (store->load) between us and the device's thread."""
        self._fence.acquire()
        self._fence.release()

    def publish(self) -> bool:
        """Make every added chain visible with one avail.idx store; True if a kick is due."""
        old = self.avail_idx
        new = self._shadow_avail
        if old == new:
            return False
        self._u16[self._avail_idx_i] = new
        self.avail_idx = new
        self.barrier()
        if self.event_idx:
            return vring_need_event(self._u16[self._avail_event_i], new, old)
        return not self._u16[self._used_flags_i] & USED_F_NO_NOTIFY

    # -- completion ------------------------------------------------------------------------
    def used_pending(self) -> bool:
        return bool(self._u16[self._used_idx_i] != self.last_used)

    def harvest(self) -> list[tuple[int, int]]:
        """Collect every new used element as (token, used_len); frees their descriptors."""
        used_idx = self._u16[self._used_idx_i]
        last = self.last_used
        count = (used_idx - last) & 0xFFFF
        if count == 0:
            return []
        if count > self.in_flight:
            raise DeviceUsedIndexJumped(
                f"{self.name}: used.idx {used_idx} is {count} past {last} "
                f"but {self.in_flight} in flight"
            )
        out: list[tuple[int, int]] = []
        u32 = self._u32
        ring_i = self._used_ring_i
        mask = self._mask
        chains = self._chains
        free = self._free
        for _ in range(count):
            elem = ring_i + 2 * (last & mask)
            head = u32[elem]
            length = u32[elem + 1]
            chain = chains[head] if head < self.size else None
            if chain is None:
                raise DeviceUsedUnknownHead(
                    f"{self.name}: used element at {last} names head {head}, not in flight"
                )
            chains[head] = None
            free.extend(reversed(chain))
            out.append((self._tokens[head], length))
            last = (last + 1) & 0xFFFF
        self.last_used = last
        self.in_flight -= count
        return out

    def describe(self) -> str:
        """Both sides' indices, for error messages."""
        u16 = self._u16
        return (
            f"avail.idx={self.avail_idx} used.idx={u16[self._used_idx_i]} "
            f"last_used={self.last_used} in_flight={self.in_flight} "
            f"used.flags={u16[self._used_flags_i]} avail_event={u16[self._avail_event_i]} "
            f"used_event={u16[self._used_event_i]}"
        )

    def arm(self) -> bool:
        """Ask for an interrupt at the next completion; True if one is already there.

        Call before sleeping on the call eventfd; if it returns True, harvest
        instead of sleeping (the device may have missed the new used_event).
        """
        if self.event_idx:
            self._u16[self._used_event_i] = self.last_used
            self.barrier()
        return self.used_pending()


# --------------------------------------------------------------------------- virtio-blk


@dataclass(frozen=True)
class BlkConfig:
    """struct virtio_blk_config (virtio 1.2 section 5.2.4), the first 60 bytes."""

    capacity: int
    size_max: int
    seg_max: int
    cylinders: int
    heads: int
    sectors: int
    blk_size: int
    physical_block_exp: int
    alignment_offset: int
    min_io_size: int
    opt_io_size: int
    writeback: int
    num_queues: int
    max_discard_sectors: int
    max_discard_seg: int
    discard_sector_alignment: int
    max_write_zeroes_sectors: int
    max_write_zeroes_seg: int
    write_zeroes_may_unmap: int

    SIZE = 60
    _FMT = struct.Struct("<QIIHBBIBBHIBxHIIIIIB3x")

    @classmethod
    def parse(cls, data: bytes) -> BlkConfig:
        if len(data) < cls.SIZE:
            data = data + bytes(cls.SIZE - len(data))
        return cls(*cls._FMT.unpack_from(data))


@dataclass(frozen=True)
class BlkRequest:
    """One virtio-blk request to submit.

    ``data`` is the OUT payload; ``length`` the IN size; ``ranges`` the
    (sector, num_sectors, flags) segments of DISCARD/WRITE_ZEROES.  ``split``
    cuts the data buffer into that many descriptors (scatter-gather).
    """

    type: int  # a BlkType, or any number to probe the device with
    sector: int = 0
    data: bytes = b""
    length: int = 0
    ranges: tuple[tuple[int, int, int], ...] = ()
    split: int = 1

    @classmethod
    def read(cls, sector: int, length: int, *, split: int = 1) -> BlkRequest:
        return cls(BlkType.IN, sector=sector, length=length, split=split)

    @classmethod
    def write(cls, sector: int, data: bytes, *, split: int = 1) -> BlkRequest:
        return cls(BlkType.OUT, sector=sector, data=data, split=split)

    @classmethod
    def flush(cls) -> BlkRequest:
        return cls(BlkType.FLUSH)

    @classmethod
    def get_id(cls) -> BlkRequest:
        return cls(BlkType.GET_ID, length=BLK_ID_BYTES)

    @classmethod
    def discard(cls, sector: int, num_sectors: int) -> BlkRequest:
        return cls(BlkType.DISCARD, ranges=((sector, num_sectors, 0),))

    @classmethod
    def write_zeroes(cls, sector: int, num_sectors: int, *, unmap: bool = False) -> BlkRequest:
        flags = WRITE_ZEROES_FLAG_UNMAP if unmap else 0
        return cls(BlkType.WRITE_ZEROES, ranges=((sector, num_sectors, flags),))


@dataclass(frozen=True)
class BlkResult:
    """What came back: the status byte, bytes the device wrote, and used.len."""

    status: int
    data: bytes
    used_len: int


@dataclass
class _Slot:
    index: int
    hdr_gpa: int
    hdr_off: int
    status_gpa: int
    status_off: int
    data_gpa: int
    data_off: int
    in_len: int = 0  # device-writable data bytes of the request in flight


class BlkQueue:
    """virtio-blk requests over one :class:`SplitQueueDriver` and its two eventfds."""

    def __init__(
        self,
        index: int,
        vq: SplitQueueDriver,
        *,
        depth: int,
        max_io: int,
        timeout: float,
        blocking_eventfds: bool = False,
    ) -> None:
        self.index = index
        self.vq = vq
        self.depth = depth
        self.max_io = max_io
        self.timeout = timeout
        mem = vq.mem
        self._buf = mem.view
        # QEMU hands out non-blocking eventfds; blocking ones check that a
        # back-end does not depend on the front-end's file status flags.
        efd_flags = os.EFD_CLOEXEC | (0 if blocking_eventfds else os.EFD_NONBLOCK)
        self.kick_fd = os.eventfd(0, efd_flags)
        self.call_fd = os.eventfd(0, efd_flags)
        self.kicks = 0
        self.interrupts = 0
        self._slots: list[_Slot] = []
        for i in range(depth):
            hdr = mem.alloc(_BLK_HDR.size, align=16, region=0)
            status = mem.alloc(1, align=1, region=0)
            data = mem.alloc(max_io, align=4096, region=len(mem.regions) - 1)
            self._slots.append(
                _Slot(
                    index=i,
                    hdr_gpa=hdr,
                    hdr_off=mem.offset(hdr, _BLK_HDR.size),
                    status_gpa=status,
                    status_off=mem.offset(status),
                    data_gpa=data,
                    data_off=mem.offset(data, max_io),
                )
            )
        self._free_slots: list[int] = list(range(depth - 1, -1, -1))
        self._poller = select.poll()
        self._poller.register(self.call_fd, select.POLLIN)

    # -- slot buffers (fast path) ----------------------------------------------------------
    @property
    def free_slots(self) -> int:
        return len(self._free_slots)

    def slot_buffer(self, slot: int) -> memoryview:
        """Writable view of a slot's data buffer (prefill write data here)."""
        s = self._slots[slot]
        return memoryview(self._buf)[s.data_off : s.data_off + self.max_io]

    def submit_io(self, write: bool, sector: int, nbytes: int) -> int:
        """Queue an IN/OUT of *nbytes* at *sector* using a slot's own buffer; returns the slot.

        Nothing is copied: OUT sends whatever the slot buffer holds.  Call
        :meth:`kick` after a batch.
        """
        slot = self._free_slots.pop() if self._free_slots else self._no_slot()
        s = self._slots[slot]
        buf = self._buf
        _BLK_HDR.pack_into(buf, s.hdr_off, 1 if write else 0, 0, sector)
        buf[s.status_off] = 0xFF
        try:
            self.vq.add(
                (
                    (s.hdr_gpa, 16, False),
                    (s.data_gpa, nbytes, not write),
                    (s.status_gpa, 1, True),
                ),
                slot,
            )
        except QueueFull:
            self._free_slots.append(slot)
            raise
        return slot

    def _no_slot(self) -> int:
        raise QueueFull(f"all {self.depth} request slots of queue {self.index} in flight")

    def submit(self, req: BlkRequest) -> int:
        """Queue any request (payload copied into the slot buffer); returns the slot."""
        if not self._free_slots:
            self._no_slot()
        slot = self._free_slots[-1]
        s = self._slots[slot]
        buf = self._buf
        segs: list[Segment] = [(s.hdr_gpa, 16, False)]
        in_len = 0
        rtype = int(req.type)
        if req.type in (BlkType.DISCARD, BlkType.WRITE_ZEROES):
            payload = b"".join(_BLK_SEG.pack(*r) for r in req.ranges)
            self._check_len(len(payload))
            buf[s.data_off : s.data_off + len(payload)] = payload
            segs.append((s.data_gpa, len(payload), False))
        elif req.type == BlkType.OUT or req.data:
            self._check_len(len(req.data))
            buf[s.data_off : s.data_off + len(req.data)] = req.data
            segs.extend(self._split(s.data_gpa, len(req.data), req.split, False))
        elif req.length:
            self._check_len(req.length)
            buf[s.data_off : s.data_off + req.length] = bytes(req.length)
            segs.extend(self._split(s.data_gpa, req.length, req.split, True))
            in_len = req.length
        segs.append((s.status_gpa, 1, True))
        _BLK_HDR.pack_into(buf, s.hdr_off, rtype, 0, req.sector)
        buf[s.status_off] = 0xFF
        self.vq.add(segs, slot)
        self._free_slots.pop()
        s.in_len = in_len
        return slot

    def _check_len(self, n: int) -> None:
        if n > self.max_io:
            raise ValueError(f"{n} bytes exceed the slot buffer ({self.max_io})")

    @staticmethod
    def _split(gpa: int, length: int, parts: int, writable: bool) -> list[Segment]:
        parts = max(1, min(parts, length))
        step = -(-length // parts)
        return [(gpa + o, min(step, length - o), writable) for o in range(0, length, step)]

    def kick(self) -> None:
        """Publish everything submitted; write the kick eventfd if the device wants it."""
        if self.vq.publish():
            os.eventfd_write(self.kick_fd, 1)
            self.kicks += 1

    # -- completion ------------------------------------------------------------------------
    def reap(self) -> list[tuple[int, int]]:
        """Completed (slot, status) pairs, without waiting; their slots are free again."""
        done = self.vq.harvest()
        if not done:
            return []
        buf = self._buf
        slots = self._slots
        free = self._free_slots
        out: list[tuple[int, int]] = []
        for slot, _used in done:
            out.append((slot, buf[slots[slot].status_off]))
            free.append(slot)
        return out

    def reap_full(self) -> list[tuple[int, BlkResult]]:
        """Like :meth:`reap` but with the device-written data and used.len."""
        done = self.vq.harvest()
        buf = self._buf
        out: list[tuple[int, BlkResult]] = []
        for slot, used_len in done:
            s = self._slots[slot]
            data = buf[s.data_off : s.data_off + s.in_len] if s.in_len else b""
            out.append((slot, BlkResult(status=buf[s.status_off], data=data, used_len=used_len)))
            self._free_slots.append(slot)
        return out

    def wait_interrupt(self, timeout: float) -> bool:
        """Sleep until the call eventfd fires or completions are already there."""
        if self.vq.arm():
            return True
        if not self._poller.poll(int(timeout * 1000)):
            return False
        os.eventfd_read(self.call_fd)
        self.interrupts += 1
        return True

    def wait(self, timeout: float | None = None) -> list[tuple[int, int]]:
        """Completed (slot, status) pairs; blocks until at least one arrives."""
        done = self.reap()
        if done:
            return done
        if not self.vq.in_flight:
            return []
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.wait_interrupt(left):
                raise FrontendTimeout(
                    f"queue {self.index}: no completion in {limit}s ({self.vq.describe()})"
                )
            done = self.reap()
            if done:
                return done

    def _wait_full(self, deadline: float) -> list[tuple[int, BlkResult]]:
        while True:
            done = self.reap_full()
            if done:
                return done
            left = deadline - time.monotonic()
            if left <= 0 or not self.wait_interrupt(left):
                raise FrontendTimeout(
                    f"queue {self.index}: no completion in time ({self.vq.describe()})"
                )

    # -- batch API -------------------------------------------------------------------------
    def run(self, requests: Iterable[BlkRequest]) -> list[BlkResult]:
        """Submit every request (up to ``depth`` at a time, one kick per batch), in order."""
        pending = list(requests)
        results: list[BlkResult | None] = [None] * len(pending)
        slot_to_req: dict[int, int] = {}
        nxt = 0
        deadline = time.monotonic() + self.timeout + 0.01 * len(pending)
        while nxt < len(pending) or slot_to_req:
            submitted = False
            while nxt < len(pending) and self._free_slots:
                req = pending[nxt]
                need = self.vq.descriptors_needed(2 + max(1, req.split))
                if self.vq.num_free < need:
                    break
                slot_to_req[self.submit(req)] = nxt
                nxt += 1
                submitted = True
            if submitted:
                self.kick()
            if not slot_to_req:
                raise QueueFull("a request needs more descriptors than the queue has")
            for slot, res in self._wait_full(deadline):
                results[slot_to_req.pop(slot)] = res
        return [r for r in results if r is not None]

    def execute(self, req: BlkRequest) -> BlkResult:
        return self.run([req])[0]

    def read(self, sector: int, length: int) -> BlkResult:
        return self.execute(BlkRequest.read(sector, length))

    def write(self, sector: int, data: bytes) -> BlkResult:
        return self.execute(BlkRequest.write(sector, data))

    def flush(self) -> BlkResult:
        return self.execute(BlkRequest.flush())

    def get_id(self) -> BlkResult:
        return self.execute(BlkRequest.get_id())

    def discard(self, sector: int, num_sectors: int) -> BlkResult:
        return self.execute(BlkRequest.discard(sector, num_sectors))

    def write_zeroes(self, sector: int, num_sectors: int, *, unmap: bool = False) -> BlkResult:
        return self.execute(BlkRequest.write_zeroes(sector, num_sectors, unmap=unmap))

    def close(self) -> None:
        for fd in (self.kick_fd, self.call_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.kick_fd = self.call_fd = -1


def wait_any(queues: Sequence[BlkQueue], timeout: float) -> list[tuple[BlkQueue, int, int]]:
    """Completions from several queues driven by one thread: (queue, slot, status)."""
    out = [(q, slot, st) for q in queues for slot, st in q.reap()]
    if out:
        return out
    if not any(q.vq.in_flight for q in queues):
        return []
    poller = select.poll()
    by_fd: dict[int, BlkQueue] = {}
    for q in queues:
        if q.vq.in_flight:
            if q.vq.arm():
                return [(r, slot, st) for r in queues for slot, st in r.reap()]
            poller.register(q.call_fd, select.POLLIN)
            by_fd[q.call_fd] = q
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        events = poller.poll(max(0, int(left * 1000))) if left > 0 else []
        if not events:
            raise FrontendTimeout(f"no completion on {len(by_fd)} queues in {timeout}s")
        for fd, _ in events:
            os.eventfd_read(fd)
            by_fd[fd].interrupts += 1
        out = [(q, slot, st) for q in queues for slot, st in q.reap()]
        if out:
            return out


# --------------------------------------------------------------------------- vhost-user


class VhostUserBlkFrontend:
    """A vhost-user-blk device as seen by its driver: connect, negotiate, do I/O, close.

    Use as a context manager.  ``queues[i]`` is a :class:`BlkQueue`.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        num_queues: int = 1,
        queue_size: int = 128,
        depth: int = 32,
        max_io: int = 128 * 1024,
        event_idx: bool = True,
        indirect: bool = False,
        start_index: int = 0,
        regions: int = 2,
        blocking_eventfds: bool = False,
        timeout: float = 10.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.socket_path = os.fspath(socket_path)
        self.num_queues = num_queues
        self.queue_size = queue_size
        self.depth = depth
        self.max_io = max_io
        self.want_event_idx = event_idx
        self.want_indirect = indirect
        self.start_index = start_index
        self.timeout = timeout
        self.blocking_eventfds = blocking_eventfds
        self.queues: list[BlkQueue] = []
        self.device_features = 0
        self.features = 0
        self.device_protocol_features = 0
        self.protocol_features = 0
        self.max_queues = 1
        self.config: BlkConfig | None = None
        self.final_bases: list[int] = []
        self.messages_sent = 0
        self._rings_stopped = False
        self._sock: socket.socket | None = None
        self._mem: DriverMemory | None = None
        self._indirect_max = 8
        ring_bytes = num_queues * (SplitRingLayout.total_bytes(queue_size) + 16 + depth * (32 + 2))
        data_bytes = num_queues * depth * _align(max_io, 4096)
        indirect_bytes = num_queues * 16 * self._indirect_max * queue_size if indirect else 0
        ring_region = ring_bytes + indirect_bytes + 4096
        sizes = [ring_region, data_bytes] if regions >= 2 else [ring_region + data_bytes]
        self._region_sizes = sizes
        try:
            self._connect(connect_timeout)
            self._setup()
        except BaseException:
            self.close(stop_rings=False)
            raise

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> VhostUserBlkFrontend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def memory(self) -> DriverMemory:
        assert self._mem is not None
        return self._mem

    def has(self, bit: int) -> bool:
        """True if feature *bit* was negotiated."""
        return bool(self.features >> bit & 1)

    def offered(self, bit: int) -> bool:
        return bool(self.device_features >> bit & 1)

    @property
    def blk_config(self) -> BlkConfig:
        assert self.config is not None
        return self.config

    # -- messages --------------------------------------------------------------------------
    def _connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.connect(self.socket_path)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                if time.monotonic() > deadline:
                    raise FrontendTimeout(f"cannot connect to {self.socket_path}: {exc}") from exc
                time.sleep(0.02)
                continue
            sock.settimeout(self.timeout)
            self._sock = sock
            return

    def _send(self, req: Request, payload: bytes = b"", fds: Sequence[int] = ()) -> bool:
        """Send one message; returns True if it asked for a REPLY_ACK."""
        assert self._sock is not None
        need_ack = (
            bool(self.protocol_features >> ProtocolFeature.REPLY_ACK & 1) and req not in _HAS_REPLY
        )
        flags = VHOST_USER_VERSION | (FLAG_NEED_REPLY if need_ack else 0)
        msg = _HDR.pack(req, flags, len(payload)) + payload
        try:
            if fds:
                socket.send_fds(self._sock, [msg], list(fds))
            else:
                self._sock.sendall(msg)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise BackendDisconnected(f"{req.name}: {exc}") from exc
        except TimeoutError as exc:
            raise FrontendTimeout(f"{req.name}: send timed out") from exc
        self.messages_sent += 1
        return need_ack

    def _recv_exact(self, n: int, what: str) -> bytes:
        assert self._sock is not None
        chunks = bytearray()
        while len(chunks) < n:
            try:
                chunk = self._sock.recv(n - len(chunks))
            except TimeoutError as exc:
                raise FrontendTimeout(f"no reply to {what} in {self.timeout}s") from exc
            except ConnectionResetError as exc:
                raise BackendDisconnected(f"{what}: {exc}") from exc
            if not chunk:
                raise BackendDisconnected(f"back-end closed the socket awaiting {what}")
            chunks += chunk
        return bytes(chunks)

    def _recv_reply(self, req: Request) -> bytes:
        request, flags, size = _HDR.unpack(self._recv_exact(_HDR.size, req.name))
        if request != req:
            raise BackendProtocolError(f"reply to {req.name} carries request {request}")
        if not flags & FLAG_REPLY or flags & FLAG_VERSION_MASK != VHOST_USER_VERSION:
            raise BackendProtocolError(f"reply to {req.name} has flags 0x{flags:x}")
        if size > 4096:
            raise BackendProtocolError(f"reply to {req.name} claims {size} bytes")
        return self._recv_exact(size, req.name) if size else b""

    def _call(self, req: Request, payload: bytes = b"", fds: Sequence[int] = ()) -> bytes:
        """A message with a real reply (GET_*)."""
        self._send(req, payload, fds)
        return self._recv_reply(req)

    def _set(self, req: Request, payload: bytes = b"", fds: Sequence[int] = ()) -> None:
        """A message without a reply; waits for the ack when REPLY_ACK is on."""
        if self._send(req, payload, fds):
            ack = self._recv_reply(req)
            if len(ack) != 8:
                raise BackendProtocolError(f"ack for {req.name} has {len(ack)} bytes")
            code = _U64.unpack(ack)[0]
            if code:
                raise BackendRefused(f"back-end nacked {req.name} with {code}")

    def _get_u64(self, req: Request) -> int:
        reply = self._call(req)
        if len(reply) != 8:
            raise BackendProtocolError(f"{req.name} reply has {len(reply)} bytes, want 8")
        return int(_U64.unpack(reply)[0])

    # -- session ---------------------------------------------------------------------------
    def _setup(self) -> None:
        self.device_features = self._get_u64(Request.GET_FEATURES)
        if not self.offered(RingFeature.VERSION_1):
            raise BackendRefused("back-end does not offer VIRTIO_F_VERSION_1")
        if not self.offered(RingFeature.PROTOCOL_FEATURES):
            raise BackendRefused("back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES")
        self.device_protocol_features = self._get_u64(Request.GET_PROTOCOL_FEATURES)
        wanted = self.device_protocol_features & _PROTOCOL_WANTED
        if not wanted >> ProtocolFeature.CONFIG & 1:
            raise BackendRefused("back-end lacks VHOST_USER_PROTOCOL_F_CONFIG")
        self._set(Request.SET_PROTOCOL_FEATURES, _U64.pack(wanted))
        self.protocol_features = wanted  # REPLY_ACK applies from the next message on
        if wanted >> ProtocolFeature.MQ & 1:
            self.max_queues = self._get_u64(Request.GET_QUEUE_NUM)
        if self.num_queues > self.max_queues:
            raise BackendRefused(f"{self.num_queues} queues wanted, back-end has {self.max_queues}")
        self._set(Request.SET_OWNER)
        self.config = self.get_config()
        accept = _RING_FEATURES_ALWAYS | _BLK_FEATURES
        if self.want_event_idx:
            accept |= 1 << RingFeature.EVENT_IDX
        if self.want_indirect:
            accept |= 1 << RingFeature.INDIRECT_DESC
        self.features = self.device_features & accept
        if self.num_queues > 1 and not self.has(BlkFeature.MQ):
            raise BackendRefused("several queues wanted but VIRTIO_BLK_F_MQ is not offered")
        self._set(Request.SET_FEATURES, _U64.pack(self.features))
        self._mem = DriverMemory(self._region_sizes)
        self._send_mem_table()
        indirect_max = self._indirect_max if self.has(RingFeature.INDIRECT_DESC) else 0
        for qi in range(self.num_queues):
            base = self.memory.alloc(SplitRingLayout.total_bytes(self.queue_size), align=16)
            layout = SplitRingLayout.packed(self.queue_size, base)
            vq = SplitQueueDriver(
                self.memory,
                layout,
                event_idx=self.has(RingFeature.EVENT_IDX),
                indirect_max=indirect_max,
                start_index=self.start_index,
                name=f"queue {qi}",
            )
            q = BlkQueue(
                qi,
                vq,
                depth=self.depth,
                max_io=self.max_io,
                timeout=self.timeout,
                blocking_eventfds=self.blocking_eventfds,
            )
            self.queues.append(q)
            self._start_queue(q)
        for q in self.queues:
            self._set(Request.SET_VRING_ENABLE, _STATE.pack(q.index, 1))

    def _send_mem_table(self) -> None:
        mem = self.memory
        payload = _MEM_HEAD.pack(len(mem.regions), 0) + b"".join(
            _MEM_REGION.pack(r.gpa, r.size, r.uva, r.offset) for r in mem.regions
        )
        self._set(Request.SET_MEM_TABLE, payload, [mem.fd] * len(mem.regions))

    def _start_queue(self, q: BlkQueue) -> None:
        lay = q.vq.layout
        mem = self.memory
        self._set(Request.SET_VRING_NUM, _STATE.pack(q.index, lay.size))
        self._set(Request.SET_VRING_BASE, _STATE.pack(q.index, q.vq.start_index))
        addr = _ADDR.pack(q.index, 0, mem.uva(lay.desc), mem.uva(lay.used), mem.uva(lay.avail), 0)
        self._set(Request.SET_VRING_ADDR, addr)
        self._set(Request.SET_VRING_KICK, _U64.pack(q.index), [q.kick_fd])
        self._set(Request.SET_VRING_CALL, _U64.pack(q.index), [q.call_fd])

    def get_config(self, size: int = BlkConfig.SIZE) -> BlkConfig:
        """GET_CONFIG for the first *size* bytes of virtio_blk_config."""
        reply = self._call(Request.GET_CONFIG, _CONFIG_HEAD.pack(0, size, 0) + bytes(size))
        if len(reply) != _CONFIG_HEAD.size + size:
            raise BackendProtocolError(f"GET_CONFIG reply has {len(reply)} bytes")
        offset, got, _flags = _CONFIG_HEAD.unpack_from(reply)
        if offset != 0 or got != size:
            raise BackendProtocolError(f"GET_CONFIG reply for offset {offset} size {got}")
        return BlkConfig.parse(reply[_CONFIG_HEAD.size :])

    def get_vring_base(self, index: int) -> int:
        """GET_VRING_BASE: stops ring *index*; returns the back-end's next avail index."""
        reply = self._call(Request.GET_VRING_BASE, _STATE.pack(index, 0))
        if len(reply) != _STATE.size:
            raise BackendProtocolError(f"GET_VRING_BASE reply has {len(reply)} bytes")
        got_index, num = _STATE.unpack(reply)
        if got_index != index:
            raise BackendProtocolError(f"GET_VRING_BASE for {index} answered for {got_index}")
        return int(num)

    def stop(self) -> list[int]:
        """Stop every ring with GET_VRING_BASE; returns (and records) the bases."""
        self._rings_stopped = True  # close() must not try again if this fails
        self.final_bases = [self.get_vring_base(q.index) for q in self.queues]
        return self.final_bases

    def close(self, *, stop_rings: bool = True) -> None:
        """Stop the rings (best effort), then close socket, eventfds and memfd."""
        if stop_rings and self._sock is not None and self.queues and not self._rings_stopped:
            with contextlib.suppress(FrontendError, OSError):
                self.stop()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for q in self.queues:
            q.close()
        if self._mem is not None:
            self._mem.close()
            self._mem = None


# Messages answered with their own reply; REPLY_ACK does not apply to them.
_HAS_REPLY = frozenset(
    {
        Request.GET_FEATURES,
        Request.GET_PROTOCOL_FEATURES,
        Request.GET_QUEUE_NUM,
        Request.GET_VRING_BASE,
        Request.GET_CONFIG,
    }
)
