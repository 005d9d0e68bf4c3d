"""GuestMemory: mapping, translation, range checks and table swaps."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offload.errors import GuestAddressOutOfRange, MemoryTableError
from offload.memory import GuestMemory, MemoryRegion
from tests.unit.offload.ringbuilder import GuestRam


@pytest.fixture
def ram() -> Iterator[GuestRam]:
    r = GuestRam(region_size=64 * 1024)
    yield r
    r.close()


def test_read_write_roundtrip_lands_in_the_shared_file(ram: GuestRam) -> None:
    gpa = ram.base_gpa + 100
    ram.mem.write(gpa, b"hello")
    assert ram.read(gpa, 5) == b"hello"
    assert ram.mem.read(gpa, 5) == b"hello"


def test_integers_are_little_endian(ram: GuestRam) -> None:
    gpa = ram.base_gpa + 8
    ram.mem.write_u16(gpa, 0x1234)
    ram.mem.write_u32(gpa + 2, 0xDEADBEEF)
    ram.mem.write_u64(gpa + 6, 0x0102030405060708)
    assert ram.read(gpa, 2) == b"\x34\x12"
    assert ram.mem.read_u16(gpa) == 0x1234
    assert ram.mem.read_u32(gpa + 2) == 0xDEADBEEF
    assert ram.mem.read_u64(gpa + 6) == 0x0102030405060708


def test_view_is_zero_copy_and_writable(ram: GuestRam) -> None:
    v = ram.mem.view(ram.base_gpa + 4096, 16)
    v[:4] = b"abcd"
    assert ram.read(ram.base_gpa + 4096, 4) == b"abcd"
    ram.write(ram.base_gpa + 4100, b"xy")
    assert bytes(v[4:6]) == b"xy"


def test_second_region_is_reachable_at_its_own_address(ram: GuestRam) -> None:
    gpa = ram.regions[1].guest_phys_addr + 10
    ram.mem.write(gpa, b"B")
    assert ram.read(gpa, 1) == b"B"
    assert ram.canaries_intact()


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (-1, 1),  # just below region A
        (2 * 64 * 1024, 1),  # just past region B
        (64 * 1024 - 4, 8),  # straddles A and B
        (0, 2 * 64 * 1024),  # covers both regions
        (10, 1 << 64),  # would wrap in 64-bit arithmetic
        ((1 << 64) - 0x10_0000, 16),  # address past 2**64 relative to base
        (0, -1),  # negative length
    ],
)
def test_out_of_range_views_raise(ram: GuestRam, offset: int, length: int) -> None:
    with pytest.raises(GuestAddressOutOfRange):
        ram.mem.view(ram.base_gpa + offset, length)
    assert ram.canaries_intact()


def test_zero_length_view_is_empty_anywhere(ram: GuestRam) -> None:
    assert ram.mem.view(0xFFFF_FFFF_FFFF, 0).nbytes == 0
    assert ram.mem.view(ram.base_gpa, 0).nbytes == 0


def test_last_byte_of_a_region_is_addressable(ram: GuestRam) -> None:
    last = ram.base_gpa + ram.region_size - 1
    ram.mem.write(last, b"z")
    assert ram.mem.read(last, 1) == b"z"
    with pytest.raises(GuestAddressOutOfRange):
        ram.mem.read_u16(last)


def test_uva_to_gpa(ram: GuestRam) -> None:
    b = ram.regions[1]
    assert ram.mem.uva_to_gpa(b.user_addr + 0x40, 16) == b.guest_phys_addr + 0x40
    with pytest.raises(GuestAddressOutOfRange):
        ram.mem.uva_to_gpa(b.user_addr + b.size - 8, 16)
    with pytest.raises(GuestAddressOutOfRange):
        ram.mem.uva_to_gpa(0x1000, 1)


def test_remove_region_and_generation(ram: GuestRam) -> None:
    gen = ram.mem.generation
    ram.mem.remove_region(ram.regions[1])
    assert ram.mem.generation == gen + 1
    assert ram.mem.regions == (ram.regions[0],)
    with pytest.raises(GuestAddressOutOfRange):
        ram.mem.read(ram.regions[1].guest_phys_addr, 1)
    with pytest.raises(MemoryTableError):
        ram.mem.remove_region(ram.regions[1])
    ram.mem.add_region(ram.regions[1], ram.fd)
    assert ram.mem.read(ram.regions[1].guest_phys_addr, 1) == b"\0"


def test_overlapping_or_empty_regions_are_refused(ram: GuestRam) -> None:
    a = ram.regions[0]
    overlap = MemoryRegion(a.guest_phys_addr + 4096, 4096, 0x1000, 0)
    with pytest.raises(MemoryTableError):
        ram.mem.add_region(overlap, ram.fd)
    with pytest.raises(MemoryTableError):
        ram.mem.add_region(MemoryRegion(0, 0, 0, 0), ram.fd)
    assert ram.mem.regions == ram.regions


def test_replace_is_all_or_nothing(ram: GuestRam) -> None:
    good = MemoryRegion(0x4000_0000, 4096, 0x1000, 0)
    bad = MemoryRegion(0x5000_0000, 4096, 0x2000, 0)
    r, w = os.pipe()  # a pipe cannot be mapped
    try:
        with pytest.raises(MemoryTableError):
            ram.mem.replace([(good, ram.fd), (bad, r)])
    finally:
        os.close(r)
        os.close(w)
    assert ram.mem.regions == ram.regions


def test_region_past_the_end_of_its_file_is_refused(ram: GuestRam) -> None:
    with pytest.raises(MemoryTableError):
        ram.mem.add_region(MemoryRegion(0x4000_0000, 8192, 0x1000, ram.total - 4096), ram.fd)
    assert ram.mem.regions == ram.regions


def test_unaligned_mmap_offset_is_honoured(ram: GuestRam) -> None:
    region = MemoryRegion(0x2000_0000, 100, 0x9000, ram.file_offsets[0] + 10)
    mem = GuestMemory()
    mem.add_region(region, ram.fd)
    ram.write(ram.base_gpa + 10, b"Q")
    assert mem.read(0x2000_0000, 1) == b"Q"
    mem.close()


def test_caller_may_close_its_fd_after_add(ram: GuestRam) -> None:
    fd = os.dup(ram.fd)
    mem = GuestMemory()
    mem.add_region(MemoryRegion(0, 4096, 0, ram.file_offsets[0]), fd)
    os.close(fd)
    mem.write(0, b"ok")
    assert ram.read(ram.base_gpa, 2) == b"ok"
    mem.close()


def test_view_survives_region_removal_and_close(ram: GuestRam) -> None:
    v = ram.mem.view(ram.regions[1].guest_phys_addr, 8)
    ram.mem.remove_region(ram.regions[1])
    v[:2] = b"ok"  # still mapped: the view keeps its mmap alive
    assert ram.read(ram.regions[1].guest_phys_addr, 2) == b"ok"
    w = ram.mem.view(ram.base_gpa, 4)
    ram.mem.close()  # BufferError inside is absorbed; w stays valid
    w[:1] = b"w"
    assert ram.read(ram.base_gpa, 1) == b"w"
    assert ram.mem.regions == ()


def test_readers_race_with_table_swaps_safely(ram: GuestRam) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                try:
                    v = ram.mem.view(ram.regions[1].guest_phys_addr, 64)
                    v[0] = 1
                except GuestAddressOutOfRange:
                    pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(200):
        ram.mem.remove_region(ram.regions[1])
        ram.mem.add_region(ram.regions[1], ram.fd)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert ram.canaries_intact()


_PROP_SIZE = 16 * 1024
_PROP_BASE = 0x10_0000  # GuestRam's default base


@pytest.fixture(scope="module")
def prop_ram() -> Iterator[GuestRam]:
    r = GuestRam(region_size=_PROP_SIZE, base_gpa=_PROP_BASE)
    yield r
    r.close()


def _near_edges() -> st.SearchStrategy[int]:
    edges = [_PROP_BASE, _PROP_BASE + _PROP_SIZE, _PROP_BASE + 2 * _PROP_SIZE, 0, 1 << 64]
    return st.one_of(
        st.sampled_from(edges).flatmap(lambda e: st.integers(e - 64, e + 64)),
        st.integers(-(1 << 65), 1 << 65),
    )


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(gpa=_near_edges(), length=st.one_of(st.integers(-2, 4200), st.integers(0, 1 << 65)))
def test_view_matches_a_reference_model(prop_ram: GuestRam, gpa: int, length: int) -> None:
    ram = prop_ram
    inside = [
        r
        for r in ram.regions
        if r.guest_phys_addr <= gpa and gpa + length <= r.guest_phys_addr + r.size
    ]
    if length == 0:
        assert ram.mem.view(gpa, 0).nbytes == 0
    elif length > 0 and inside:
        v = ram.mem.view(gpa, length)
        assert v.nbytes == length and not v.readonly
        v[0] = 0x5A
        assert ram.read(gpa, 1) == b"\x5a"
        v[0] = 0
    else:
        with pytest.raises(GuestAddressOutOfRange):
            ram.mem.view(gpa, length)
    assert ram.canaries_intact()
