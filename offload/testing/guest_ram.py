"""The driver's guest RAM: one memfd, mapped once, cut into regions, bump-allocated.

This is the *front-end's* memory (what QEMU would own), not the card's view
of it (``offload.memory``).  One ``os.memfd_create`` file is mapped once with
``mmap``.  It is cut into regions, each announced to the back-end in
``SET_MEM_TABLE`` with its own copy of the memfd (``SCM_RIGHTS``), a guest
physical base, a made-up front-end virtual base (``userspace_addr``) and an
``mmap_offset`` into the file.  By default there are two regions with a hole
between them and distinct GPA/UVA/offset values, so a back-end that mixes up
the three address spaces fails loudly.  The front-end puts the rings and
request headers in region 0 and the data buffers in the last region.
Allocation is a bump allocator: the layout is fixed at connect time and
nothing is freed until ``close()``.

Ring indices are read and written through whole-word ``memoryview`` casts
(``u16``/``u32``) so each is one aligned load or store; hence little-endian
hosts only.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sys
from collections.abc import Sequence

from offload.testing.protocol import MAX_MEM_REGIONS, MemRegion

__all__ = ["DriverMemory", "align_up"]


def align_up(value: int, alignment: int) -> int:
    """*value* rounded up to a multiple of *alignment* (a power of two)."""
    return (value + alignment - 1) & ~(alignment - 1)


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
            size = align_up(max(size, 1), 0x20_0000)
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
        gpa = align_up(self._next[region], align)
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
