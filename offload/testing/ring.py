"""The driver half of a split virtqueue (virtio 1.2 section 2.7), in :class:`DriverMemory`.

Descriptor table (16 bytes/entry), available ring (flags, idx, ring[N],
used_event) and used ring (flags, idx, {id, len}[N], avail_event) are packed
at their minimum alignments (16, 2, 4) in guest memory, all little-endian via
``struct``; ring indices go through the memory's whole-word views so each is
one aligned access.  Free descriptors sit on a Python stack; ``add()`` pops a
chain (or one descriptor pointing at a per-head indirect table when
INDIRECT_DESC is negotiated), writes it and its avail slot, and ``publish()``
stores ``avail.idx`` once per batch.  ``harvest()`` walks the used ring from
the last seen index, returns every chain's descriptors to the stack, and
refuses device mistakes (unknown head, idx jumping past what is in flight).
Indices are free-running 16-bit counters; slots are ``idx & (N-1)``.  With
EVENT_IDX the driver kicks only when ``vring_need_event`` says so and asks
for an interrupt at the next completion; a lock round-trip provides the full
memory barrier needed between publishing and reading the other side's event
index (a LOCK-prefixed instruction on x86).
"""

from __future__ import annotations

import enum
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from offload.testing.errors import DeviceUsedIndexJumped, DeviceUsedUnknownHead, QueueFull
from offload.testing.guest_ram import DriverMemory, align_up

__all__ = [
    "DESC_F_INDIRECT",
    "DESC_F_NEXT",
    "DESC_F_WRITE",
    "USED_F_NO_NOTIFY",
    "RingFeature",
    "Segment",
    "SplitQueueDriver",
    "SplitRingLayout",
    "vring_need_event",
]


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


DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4
USED_F_NO_NOTIFY = 1  # used.flags: device asks not to be kicked (no EVENT_IDX)

_DESC = struct.Struct("<QIHH")  # addr, len, flags, next

Segment = tuple[int, int, bool]  # (gpa, length, device_writable)


def vring_need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """True if moving an index from *old_idx* to *new_idx* crossed *event_idx* (mod 2**16)."""
    return ((new_idx - event_idx - 1) & 0xFFFF) < ((new_idx - old_idx) & 0xFFFF)


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
        used = align_up(cls.desc_bytes(size) + cls.avail_bytes(size), 4)
        return used + cls.used_bytes(size)

    @classmethod
    def packed(cls, size: int, base: int) -> SplitRingLayout:
        """Desc, avail and used back to back at their minimum alignments (16, 2, 4)."""
        if size <= 0 or size & (size - 1) or size > 32768:
            raise ValueError(f"split queue size must be a power of 2 <= 32768, got {size}")
        if base % 16:
            raise ValueError("descriptor table must be 16-byte aligned")
        avail = base + cls.desc_bytes(size)
        used = align_up(avail + cls.avail_bytes(size), 4)
        return cls(size=size, desc=base, avail=avail, used=used)

    @property
    def used_event(self) -> int:
        """Address of avail->used_event (driver-written, EVENT_IDX)."""
        return self.avail + 4 + 2 * self.size

    @property
    def avail_event(self) -> int:
        """Address of used->avail_event (device-written, EVENT_IDX)."""
        return self.used + 4 + 8 * self.size


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
        return 1 if self._goes_indirect(nsegs) else nsegs

    def _goes_indirect(self, nsegs: int) -> bool:
        """True if a chain of *nsegs* buffers uses the head's indirect table."""
        return bool(self.indirect_max) and 1 < nsegs <= self.indirect_max

    # -- submission ------------------------------------------------------------------------
    def add(self, segments: Sequence[Segment], token: int) -> int:
        """Write one chain and its avail slot (not yet visible); returns the head index.

        Device-readable segments must come before device-writable ones.
        """
        nsegs = len(segments)
        if nsegs == 0:
            raise ValueError("a chain needs at least one buffer")
        free = self._free
        if self._goes_indirect(nsegs):
            if not free:
                raise QueueFull("no free descriptors")
            head = free.pop()
            table_off = self._indirect_off + 16 * self.indirect_max * head
            self._write_chain(table_off, range(nsegs), segments)
            table_gpa = self._indirect_gpa + 16 * self.indirect_max * head
            _DESC.pack_into(
                self._buf, self._desc_off + 16 * head, table_gpa, 16 * nsegs, DESC_F_INDIRECT, 0
            )
            chain = [head]
        else:
            if len(free) < nsegs:
                raise QueueFull(f"{nsegs} descriptors wanted, {len(free)} free")
            chain = free[-nsegs:]
            chain.reverse()
            del free[-nsegs:]
            self._write_chain(self._desc_off, chain, segments)
            head = chain[0]
        self._chains[head] = chain
        self._tokens[head] = token
        slot = self._shadow_avail & self._mask
        self._u16[self._avail_ring_i + slot] = head
        self._shadow_avail = (self._shadow_avail + 1) & 0xFFFF
        self.in_flight += 1
        return head

    def _write_chain(
        self, table_off: int, entries: Sequence[int], segments: Sequence[Segment]
    ) -> None:
        """Write *segments* into table entries ``entries[0], entries[1], ...``, linked in order."""
        pack = _DESC.pack_into
        buf = self._buf
        last = len(segments) - 1
        for i, (gpa, length, writable) in enumerate(segments):
            flags = DESC_F_WRITE if writable else 0
            nxt = 0
            if i < last:
                flags |= DESC_F_NEXT
                nxt = entries[i + 1]
            pack(buf, table_off + 16 * entries[i], gpa, length, flags, nxt)

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
