"""Guest memory: the only module in the project that touches mmap.

Regions arrive from vhost-user SET_MEM_TABLE / ADD_MEM_REG / REM_MEM_REG as
(fd, offset) pairs.  Each region is mapped ``MAP_SHARED`` read-write; when
``mmap_offset`` is not aligned to the allocation granularity we map from the
aligned offset below it and slice the difference off, as libvhost-user does.
CPython's ``mmap`` keeps its own ``dup()`` of the fd, so the caller keeps
ownership of its fd and may close it as soon as ``add_region``/``replace``
returns.  A region that runs past the end of its file is refused, since
touching such a page would kill the card with SIGBUS.

Lookup is lock-free for readers.  The region list is an immutable
``_Table`` (sorted start addresses plus the mappings) that writers build
aside and publish with one attribute assignment, which is atomic under the
GIL; a reader takes one snapshot of ``self._table`` and never sees half a
table.  Writers serialise on a lock.  ``generation`` counts table changes so
the virtqueues can notice and re-map their cached ring views.

Retired mappings are never unmapped explicitly while the card runs: a
memoryview handed out earlier (a descriptor buffer being read into, a
queue's cached ring view) holds a reference to its mmap, and the mapping is
unmapped by reference counting when the last view and the last table
snapshot that name it disappear.  An in-flight request therefore never
dangles; it may finish writing into memory the guest has just unplugged,
which is harmless.  ``close()`` (shutdown, after the queue threads stopped)
does release and close every mapping; a mapping still exported by a live
view raises ``BufferError`` inside mmap and is left to reference counting.

Every range check is done here (rust-vmm ``checked_offset`` style).  A
range must lie inside exactly one region: a range outside every region or
straddling two raises ``GuestAddressOutOfRange``.  Python integers do not
wrap, and negative or >= 2**64 values never match a region, so a guest
``addr + len`` that would overflow in C simply fails the check.  Integers
are little-endian as virtio 1.x requires, and the card runs on little-endian
x86, so the ``read_uN``/``write_uN`` helpers use native ``memoryview.cast``
accesses: one load or store each.  ``struct.pack_into`` would zero-fill the
target before writing it, and a driver reading concurrently could see that.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import stat
import threading
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

from offload.errors import GuestAddressOutOfRange, MemoryTableError

__all__ = ["GuestMemory", "MemoryRegion"]

_ADDR_LIMIT = 1 << 64


@dataclass(frozen=True)
class MemoryRegion:
    """One region as described by the vhost-user front-end."""

    guest_phys_addr: int
    size: int
    user_addr: int
    mmap_offset: int


class _Mapping:
    """One mapped region: the mmap and a writable view of exactly ``size`` bytes."""

    __slots__ = ("gpa", "mm", "region", "size", "uva", "view")

    def __init__(self, region: MemoryRegion, fd: int) -> None:
        if region.size <= 0:
            raise MemoryTableError(f"region {region} has no size")
        if not 0 <= region.guest_phys_addr < region.guest_phys_addr + region.size <= _ADDR_LIMIT:
            raise MemoryTableError(f"region {region} is outside the 64-bit address space")
        if region.mmap_offset < 0:
            raise MemoryTableError(f"region {region} has a negative mmap offset")
        try:
            st = os.fstat(fd)
        except OSError as exc:
            raise MemoryTableError(f"cannot map region {region}: {exc}") from exc
        if stat.S_ISREG(st.st_mode) and st.st_size < region.mmap_offset + region.size:
            # Touching a page past the end of the file would SIGBUS the card.
            raise MemoryTableError(f"region {region} runs past the end of its file")
        granule = mmap.ALLOCATIONGRANULARITY
        start = region.mmap_offset - region.mmap_offset % granule
        delta = region.mmap_offset - start
        try:
            self.mm = mmap.mmap(
                fd,
                delta + region.size,
                flags=mmap.MAP_SHARED,
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
                offset=start,
            )
        except (OSError, ValueError, OverflowError) as exc:
            raise MemoryTableError(f"cannot map region {region}: {exc}") from exc
        self.region = region
        self.gpa = region.guest_phys_addr
        self.size = region.size
        self.uva = region.user_addr
        self.view = memoryview(self.mm)[delta : delta + region.size]

    def close(self) -> None:
        """Unmap now if no view is exported; otherwise reference counting will."""
        with contextlib.suppress(BufferError):
            self.view.release()
            self.mm.close()


@dataclass(frozen=True)
class _Table:
    starts: tuple[int, ...]
    maps: tuple[_Mapping, ...]

    @staticmethod
    def build(maps: Iterable[_Mapping]) -> _Table:
        ordered = sorted(maps, key=lambda m: m.gpa)
        for prev, cur in itertools.pairwise(ordered):
            if cur.gpa < prev.gpa + prev.size:
                raise MemoryTableError(f"region {cur.region} overlaps {prev.region}")
        return _Table(tuple(m.gpa for m in ordered), tuple(ordered))


_EMPTY_TABLE = _Table((), ())


class GuestMemory:
    """The guest's physical memory as a set of mapped regions."""

    def __init__(self) -> None:
        self._table = _EMPTY_TABLE
        self._write_lock = threading.Lock()
        self.generation = 0

    # -- table changes (protocol thread) ---------------------------------

    def add_region(self, region: MemoryRegion, fd: int) -> None:
        """Map ``region`` from ``fd`` (ADD_MEM_REG); the caller keeps its fd."""
        mapping = _Mapping(region, fd)
        with self._write_lock:
            self._publish(_Table.build((*self._table.maps, mapping)))

    def remove_region(self, region: MemoryRegion) -> None:
        """Forget the region matching ``region`` (REM_MEM_REG).

        Matches on guest address, size and user address, as libvhost-user
        does; the mmap offset the front-end repeats is not compared.
        """
        with self._write_lock:
            kept = [
                m
                for m in self._table.maps
                if (m.gpa, m.size, m.uva) != (region.guest_phys_addr, region.size, region.user_addr)
            ]
            if len(kept) == len(self._table.maps):
                raise MemoryTableError(f"no mapped region matches {region}")
            self._publish(_Table.build(kept))

    def replace(self, regions_with_fds: Iterable[tuple[MemoryRegion, int]]) -> None:
        """Swap in a whole new table (SET_MEM_TABLE); all-or-nothing."""
        maps = [_Mapping(region, fd) for region, fd in regions_with_fds]
        table = _Table.build(maps)
        with self._write_lock:
            self._publish(table)

    def close(self) -> None:
        """Drop every region and unmap those no live view still exports."""
        with self._write_lock:
            old = self._table
            self._publish(_EMPTY_TABLE)
        for mapping in old.maps:
            mapping.close()

    def _publish(self, table: _Table) -> None:
        self._table = table
        self.generation += 1

    @property
    def regions(self) -> tuple[MemoryRegion, ...]:
        """The regions currently mapped, by guest address."""
        return tuple(m.region for m in self._table.maps)

    def __enter__(self) -> GuestMemory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- translation and access (queue threads) --------------------------

    def uva_to_gpa(self, uva: int, length: int) -> int:
        """Translate a front-end virtual address range to a guest physical address."""
        if length >= 0:
            for m in self._table.maps:
                offset = uva - m.uva
                if offset >= 0 and offset + length <= m.size:
                    return m.gpa + offset
        raise GuestAddressOutOfRange(uva, length)

    def _locate(self, gpa: int, length: int) -> tuple[memoryview, int]:
        table = self._table
        i = bisect_right(table.starts, gpa) - 1
        if i >= 0 and length >= 0:
            m = table.maps[i]
            offset = gpa - m.gpa
            if offset + length <= m.size:
                return m.view, offset
        raise GuestAddressOutOfRange(gpa, length)

    def view(self, gpa: int, length: int) -> memoryview:
        """A zero-copy writable view of ``length`` bytes at ``gpa``.

        A zero length returns an empty view whatever the address, since it
        touches no memory.
        """
        if length == 0:
            return memoryview(bytearray())
        table = self._table  # inlined _locate: this is the per-descriptor hot path
        i = bisect_right(table.starts, gpa) - 1
        if i >= 0 and length > 0:
            m = table.maps[i]
            offset = gpa - m.gpa
            if offset + length <= m.size:
                return m.view[offset : offset + length]
        raise GuestAddressOutOfRange(gpa, length)

    def read(self, gpa: int, n: int) -> bytes:
        """A copy of ``n`` bytes at ``gpa`` (for small structures, not payloads)."""
        if n == 0:
            return b""
        base, offset = self._locate(gpa, n)
        return bytes(base[offset : offset + n])

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` to ``gpa``; nothing is written unless all of it fits."""
        src = memoryview(data).cast("B")
        if not src.nbytes:
            return
        base, offset = self._locate(gpa, src.nbytes)
        base[offset : offset + src.nbytes] = src

    def read_u16(self, gpa: int) -> int:
        base, offset = self._locate(gpa, 2)
        return int(memoryview(base)[offset : offset + 2].cast("H")[0])

    def read_u32(self, gpa: int) -> int:
        base, offset = self._locate(gpa, 4)
        return int(memoryview(base)[offset : offset + 4].cast("I")[0])

    def read_u64(self, gpa: int) -> int:
        base, offset = self._locate(gpa, 8)
        return int(memoryview(base)[offset : offset + 8].cast("Q")[0])

    def write_u16(self, gpa: int, value: int) -> None:
        base, offset = self._locate(gpa, 2)
        memoryview(base)[offset : offset + 2].cast("H")[0] = value

    def write_u32(self, gpa: int, value: int) -> None:
        base, offset = self._locate(gpa, 4)
        memoryview(base)[offset : offset + 4].cast("I")[0] = value

    def write_u64(self, gpa: int, value: int) -> None:
        base, offset = self._locate(gpa, 8)
        memoryview(base)[offset : offset + 8].cast("Q")[0] = value
