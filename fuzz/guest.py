"""Guest memory for the fuzz targets: regions with holes, canaries and an access oracle.

One memfd holds three regions fenced by canary bytes::

    file:  canary | A (8 KiB) | canary | B (4 KiB) | canary | C (4 KiB) | canary
    guest: A at 0x10000, a hole, B at 0x20000, C at 0x21000 (B and C adjacent)

Every region starts at a file offset that is not a multiple of the page, so
``GuestMemory`` maps from the page below and the canary bytes before and
after each region lie inside its mapping: a device that indexed past a
region's view would hit them.  ``CheckedMemory`` is a ``GuestMemory`` whose
every access (``view``, ``read``, ``write``, ``read_uN``/``write_uN``) is
compared with an independent table of the regions: an access the card
allowed must lie inside one region, and a view must point at the host bytes
that back that guest address; an access it refused must indeed not fit in
one region.  ``check_canaries`` then proves that nothing was written outside
the regions (the volume's ``preadv`` writes through the views, so the kernel
is covered too).  A violation raises ``OutOfRegionAccess``, which the fuzzer
reports as a crash.

``load(image)`` lays a fuzz input's memory image over the regions in guest
address order (A, then B, then C) and zero-fills the rest, so each input
starts from the same memory.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from offload.errors import GuestAddressOutOfRange
from offload.memory import GuestMemory, MemoryRegion

__all__ = ["CANARY", "CheckedMemory", "FuzzRam", "OutOfRegionAccess", "RegionLayout", "LAYOUT"]

CANARY: Final = 0xA5
T = TypeVar("T")


class OutOfRegionAccess(AssertionError):
    """The card touched, or handed out, bytes outside the guest's regions."""


@dataclass(frozen=True)
class RegionLayout:
    """One region: where the guest sees it and where it lives in the file."""

    gpa: int
    size: int
    file_offset: int

    @property
    def end(self) -> int:
        return self.gpa + self.size


LAYOUT: Final = (
    RegionLayout(gpa=0x1_0000, size=0x2000, file_offset=0x0800),
    RegionLayout(gpa=0x2_0000, size=0x1000, file_offset=0x4800),
    RegionLayout(gpa=0x2_1000, size=0x1000, file_offset=0x6800),
)
FILE_SIZE: Final = 0x8000
IMAGE_SIZE: Final = sum(r.size for r in LAYOUT)


def _address(view: memoryview) -> int:
    """Host address of the first byte of a writable, non-empty view."""
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def region_of(gpa: int, length: int) -> RegionLayout | None:
    """The region holding all of ``[gpa, gpa + length)``, by the fuzzer's own table."""
    for r in LAYOUT:
        if r.gpa <= gpa and gpa + length <= r.end:
            return r
    return None


class CheckedMemory(GuestMemory):
    """``GuestMemory`` with every access checked against ``LAYOUT`` (see the module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self._host: dict[int, int] = {}

    def learn_host_addresses(self) -> None:
        """Record where each region is mapped (call once after the table is set)."""
        view = super().view
        self._host = {r.gpa: _address(view(r.gpa, r.size)) for r in LAYOUT}

    def _allowed(self, gpa: int, length: int) -> RegionLayout:
        region = region_of(gpa, length)
        if region is None:
            raise OutOfRegionAccess(f"card allowed 0x{gpa:x}+0x{length:x}, outside every region")
        return region

    def _refused(self, gpa: int, length: int, exc: GuestAddressOutOfRange) -> None:
        if length > 0 and region_of(gpa, length) is not None:
            raise OutOfRegionAccess(f"card refused 0x{gpa:x}+0x{length:x} inside a region") from exc

    def view(self, gpa: int, length: int) -> memoryview:
        try:
            result = super().view(gpa, length)
        except GuestAddressOutOfRange as exc:
            self._refused(gpa, length, exc)
            raise
        if length == 0:
            if result.nbytes:
                raise OutOfRegionAccess(f"empty access at 0x{gpa:x} returned {result.nbytes} bytes")
            return result
        region = self._allowed(gpa, length)
        if result.nbytes != length:
            raise OutOfRegionAccess(f"view of 0x{gpa:x}+0x{length:x} has {result.nbytes} bytes")
        expected = self._host[region.gpa] + (gpa - region.gpa)
        if _address(result) != expected:
            raise OutOfRegionAccess(f"view of 0x{gpa:x} is not backed by that guest address")
        return result

    def read(self, gpa: int, n: int) -> bytes:
        try:
            data = super().read(gpa, n)
        except GuestAddressOutOfRange as exc:
            self._refused(gpa, n, exc)
            raise
        if n:
            self._allowed(gpa, n)
        return data

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        n = memoryview(data).nbytes
        try:
            super().write(gpa, data)
        except GuestAddressOutOfRange as exc:
            self._refused(gpa, n, exc)
            raise
        if n:
            self._allowed(gpa, n)

    def _checked(self, gpa: int, n: int, access: Callable[[], T]) -> T:
        try:
            result = access()
        except GuestAddressOutOfRange as exc:
            self._refused(gpa, n, exc)
            raise
        self._allowed(gpa, n)
        return result

    def read_u16(self, gpa: int) -> int:
        return self._checked(gpa, 2, lambda: super(CheckedMemory, self).read_u16(gpa))

    def read_u32(self, gpa: int) -> int:
        return self._checked(gpa, 4, lambda: super(CheckedMemory, self).read_u32(gpa))

    def read_u64(self, gpa: int) -> int:
        return self._checked(gpa, 8, lambda: super(CheckedMemory, self).read_u64(gpa))

    def write_u16(self, gpa: int, value: int) -> None:
        self._checked(gpa, 2, lambda: super(CheckedMemory, self).write_u16(gpa, value))

    def write_u32(self, gpa: int, value: int) -> None:
        self._checked(gpa, 4, lambda: super(CheckedMemory, self).write_u32(gpa, value))

    def write_u64(self, gpa: int, value: int) -> None:
        self._checked(gpa, 8, lambda: super(CheckedMemory, self).write_u64(gpa, value))


class FuzzRam:
    """The memfd behind the regions, the fuzzer's own mapping of it, and the card's view."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("bmaas-fuzz", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, FILE_SIZE)
        self.mm = mmap.mmap(self.fd, FILE_SIZE)
        self._canaries: list[tuple[int, int]] = []
        cursor = 0
        for r in sorted(LAYOUT, key=lambda r: r.file_offset):
            self._canaries.append((cursor, r.file_offset))
            cursor = r.file_offset + r.size
        self._canaries.append((cursor, FILE_SIZE))
        for a, b in self._canaries:
            self.mm[a:b] = bytes([CANARY]) * (b - a)
        self.mem = CheckedMemory()
        self.mem.replace(
            (
                MemoryRegion(
                    guest_phys_addr=r.gpa,
                    size=r.size,
                    user_addr=0x7F00_0000_0000 + r.file_offset * 0x100,
                    mmap_offset=r.file_offset,
                ),
                self.fd,
            )
            for r in LAYOUT
        )
        self.mem.learn_host_addresses()

    def load(self, image: bytes) -> None:
        """Lay ``image`` over A, B and C in guest order; zero what it does not cover."""
        offset = 0
        for r in LAYOUT:
            chunk = image[offset : offset + r.size]
            start = r.file_offset
            self.mm[start : start + len(chunk)] = chunk
            self.mm[start + len(chunk) : start + r.size] = bytes(r.size - len(chunk))
            offset += r.size

    def read(self, gpa: int, length: int) -> bytes:
        """What the guest sees at ``gpa`` (through the fuzzer's mapping, not the card's)."""
        region = region_of(gpa, length)
        if region is None:
            raise ValueError(f"0x{gpa:x}+{length} is not inside one region")
        start = region.file_offset + gpa - region.gpa
        return bytes(self.mm[start : start + length])

    def check_canaries(self) -> None:
        """Raise ``OutOfRegionAccess`` if any byte outside the regions changed."""
        for a, b in self._canaries:
            if self.mm[a:b].count(CANARY) != b - a:
                raise OutOfRegionAccess(f"file bytes 0x{a:x}..0x{b:x} outside the regions changed")
