"""A tiny driver-side split-ring builder for unit tests.

``GuestRam`` is one anonymous memfd laid out as ``canary | region A | canary
| region B | canary``.  The device side registers A and B (adjacent in guest
physical space, far apart in the file) with a ``GuestMemory``; the test,
playing the driver, keeps its own mapping of the whole file.  Canary bytes
around and between the regions let a test prove the device never read or
wrote outside them.  ``DriverRing`` writes descriptors, avail entries and
indirect tables the way a (possibly hostile) driver would.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass

from offload.memory import GuestMemory, MemoryRegion
from offload.virtio.chain import F_INDIRECT, F_NEXT, F_WRITE
from offload.virtio.queue import InflightHooks, SplitQueue

CANARY = 0xA5
PAGE = mmap.PAGESIZE
DESC = struct.Struct("<QIHH")


@dataclass(frozen=True)
class Buf:
    """One buffer of a chain as the driver describes it."""

    gpa: int
    length: int
    writable: bool = False


class GuestRam:
    """An anonymous memfd holding two guest regions fenced by canary pages."""

    def __init__(self, *, region_size: int = 1 << 20, base_gpa: int = 0x10_0000) -> None:
        self.region_size = region_size
        self.base_gpa = base_gpa
        self.fd = os.memfd_create("ringbuilder")
        guard = 4 * PAGE
        self.file_offsets = (guard, 2 * guard + region_size)
        self.total = 3 * guard + 2 * region_size
        os.ftruncate(self.fd, self.total)
        self.mm = mmap.mmap(self.fd, self.total)
        self.regions = tuple(
            MemoryRegion(
                guest_phys_addr=base_gpa + i * region_size,
                size=region_size,
                user_addr=0x7F00_0000_0000 + i * 0x1000_0000,
                mmap_offset=self.file_offsets[i],
            )
            for i in range(2)
        )
        self.mem = GuestMemory()
        self.mem.replace((r, self.fd) for r in self.regions)
        self._canary_ranges = (
            (0, guard),
            (guard + region_size, 2 * guard + region_size),
            (2 * guard + 2 * region_size, self.total),
        )
        for a, b in self._canary_ranges:  # the regions themselves start zeroed
            self.mm[a:b] = bytes([CANARY]) * (b - a)

    @property
    def end_gpa(self) -> int:
        return self.base_gpa + 2 * self.region_size

    def _file_offset(self, gpa: int, n: int) -> int:
        for region, offset in zip(self.regions, self.file_offsets, strict=True):
            rel = gpa - region.guest_phys_addr
            if rel >= 0 and rel + n <= region.size:
                return offset + rel
        raise AssertionError(f"test driver used bad address 0x{gpa:x}")

    def write(self, gpa: int, data: bytes) -> None:
        off = self._file_offset(gpa, len(data))
        self.mm[off : off + len(data)] = data

    def read(self, gpa: int, n: int) -> bytes:
        off = self._file_offset(gpa, n)
        return bytes(self.mm[off : off + n])

    def canaries_intact(self) -> bool:
        want = CANARY.to_bytes(1, "little")
        return all(self.mm[a:b] == want * (b - a) for a, b in self._canary_ranges)

    def close(self) -> None:
        self.mem.close()
        self.mm.close()
        os.close(self.fd)


class DriverRing:
    """The driver's side of one split virtqueue (by default at the start of region A)."""

    def __init__(
        self,
        ram: GuestRam,
        *,
        size: int = 16,
        event_idx: bool = False,
        base_gpa: int | None = None,
        data_limit: int | None = None,
    ) -> None:
        self.ram = ram
        self.size = size
        base = ram.base_gpa if base_gpa is None else base_gpa
        self.data_limit = ram.base_gpa + ram.region_size if data_limit is None else data_limit
        self.desc_gpa = base
        self.avail_gpa = base + 16 * size
        self.used_gpa = (self.avail_gpa + 6 + 2 * size + 3) & ~3
        self.data_gpa = (self.used_gpa + 6 + 8 * size + 4095) & ~4095
        self.next_data = self.data_gpa
        self.avail_idx = 0
        self.used_seen = 0
        self.next_desc = 0
        self.event_idx = event_idx
        self._device_queue: SplitQueue | None = None

    def device_queue(self) -> SplitQueue:
        """The device's queue for this ring, created once and then reused."""
        if self._device_queue is None:
            self._device_queue = self.queue()
        return self._device_queue

    def queue(self, inflight: InflightHooks | None = None) -> SplitQueue:
        """A new device-side queue over this ring (starting at index 0)."""
        return SplitQueue(
            self.ram.mem,
            size=self.size,
            desc_gpa=self.desc_gpa,
            avail_gpa=self.avail_gpa,
            used_gpa=self.used_gpa,
            event_idx=self.event_idx,
            inflight=inflight,
        )

    def alloc(self, n: int, fill: bytes = b"") -> int:
        gpa = self.next_data
        self.next_data = (gpa + n + 15) & ~15
        if self.next_data > self.data_limit:
            raise AssertionError("ring builder ran out of its data area")
        if fill:
            self.ram.write(gpa, fill)
        return gpa

    def set_desc(self, index: int, addr: int, length: int, flags: int, nxt: int) -> None:
        self.ram.write(self.desc_gpa + 16 * index, DESC.pack(addr, length, flags, nxt))

    def add_chain(self, bufs: list[Buf], *, indirect: bool = False) -> int:
        """Write ``bufs`` as one chain (optionally through an indirect table)."""
        if indirect:
            table = b"".join(
                DESC.pack(
                    b.gpa,
                    b.length,
                    (F_WRITE if b.writable else 0) | (F_NEXT if i + 1 < len(bufs) else 0),
                    i + 1 if i + 1 < len(bufs) else 0,
                )
                for i, b in enumerate(bufs)
            )
            table_gpa = self.alloc(len(table), table)
            head = self._take_desc()
            self.set_desc(head, table_gpa, len(table), F_INDIRECT, 0)
            return head
        indices = [self._take_desc() for _ in bufs]
        for i, b in enumerate(bufs):
            last = i + 1 == len(bufs)
            flags = (F_WRITE if b.writable else 0) | (0 if last else F_NEXT)
            self.set_desc(indices[i], b.gpa, b.length, flags, 0 if last else indices[i + 1])
        return indices[0]

    def _take_desc(self) -> int:
        index = self.next_desc
        self.next_desc = (index + 1) % self.size
        return index

    def publish(self, *heads: int) -> None:
        for head in heads:
            slot = self.avail_gpa + 4 + 2 * (self.avail_idx % self.size)
            self.ram.write(slot, struct.pack("<H", head))
            self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.set_avail_idx(self.avail_idx)

    def set_avail_idx(self, idx: int) -> None:
        self.ram.write(self.avail_gpa + 2, struct.pack("<H", idx & 0xFFFF))

    def set_avail_flags(self, flags: int) -> None:
        self.ram.write(self.avail_gpa, struct.pack("<H", flags))

    def set_used_event(self, idx: int) -> None:
        self.ram.write(self.avail_gpa + 4 + 2 * self.size, struct.pack("<H", idx & 0xFFFF))

    def avail_event(self) -> int:
        return int(struct.unpack("<H", self.ram.read(self.used_gpa + 4 + 8 * self.size, 2))[0])

    def used_idx(self) -> int:
        return int(struct.unpack("<H", self.ram.read(self.used_gpa + 2, 2))[0])

    def take_used(self) -> list[tuple[int, int]]:
        """The (id, len) elements the device published since the last call."""
        out = []
        end = self.used_idx()
        while self.used_seen != end:
            slot = self.used_gpa + 4 + 8 * (self.used_seen % self.size)
            out.append(struct.unpack("<II", self.ram.read(slot, 8)))
            self.used_seen = (self.used_seen + 1) & 0xFFFF
        return [(int(a), int(b)) for a, b in out]
