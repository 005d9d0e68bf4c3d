"""The out-of-region oracle of ``fuzz.guest`` catches what it is there to catch."""

from __future__ import annotations

import ctypes

import pytest

from fuzz.guest import LAYOUT, CheckedMemory, FuzzRam, OutOfRegionAccess
from offload.errors import GuestAddressOutOfRange
from offload.memory import GuestMemory

A, B, C = LAYOUT


@pytest.fixture(scope="module")
def ram() -> FuzzRam:
    return FuzzRam()


def test_accesses_inside_regions_pass_and_see_the_guest_bytes(ram: FuzzRam) -> None:
    ram.load(b"\x11" * A.size + b"\x22" * B.size + b"\x33" * C.size)
    assert ram.mem.read(A.gpa, 4) == b"\x11" * 4
    assert bytes(ram.mem.view(C.end - 8, 8)) == b"\x33" * 8
    ram.mem.write_u32(B.gpa, 0xDEADBEEF)
    assert ram.read(B.gpa, 4) == bytes.fromhex("efbeadde")
    ram.check_canaries()


@pytest.mark.parametrize(
    ("gpa", "length"), [(A.end - 1, 2), (A.end, 1), (B.end - 4, 8), (C.end, 1), (0, 1)]
)
def test_ranges_outside_one_region_are_refused(ram: FuzzRam, gpa: int, length: int) -> None:
    with pytest.raises(GuestAddressOutOfRange):
        ram.mem.view(gpa, length)


def test_a_view_outside_its_region_is_caught(monkeypatch: pytest.MonkeyPatch, ram: FuzzRam) -> None:
    real = GuestMemory.view

    def off_by_one(self: GuestMemory, gpa: int, length: int) -> memoryview:
        return real(self, gpa + 1, length)  # a bug: the view is one byte further on

    monkeypatch.setattr(GuestMemory, "view", off_by_one)
    with pytest.raises(OutOfRegionAccess, match="not backed by that guest address"):
        ram.mem.view(A.gpa, 16)


def test_a_refused_range_inside_a_region_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: GuestMemory, gpa: int, length: int) -> memoryview:
        raise GuestAddressOutOfRange(gpa, length)

    mem = CheckedMemory()
    monkeypatch.setattr(GuestMemory, "view", refuse)
    with pytest.raises(OutOfRegionAccess, match="refused"):
        mem.view(A.gpa, 16)


def test_a_write_next_to_a_region_is_caught_by_the_canaries(ram: FuzzRam) -> None:
    fresh = FuzzRam()
    fresh.check_canaries()
    view = fresh.mem.view(B.gpa + B.size - 1, 1)
    after = ctypes.addressof(ctypes.c_char.from_buffer(view)) + 1
    ctypes.c_char.from_address(after).value = b"!"  # the byte after region B, in the same page
    with pytest.raises(OutOfRegionAccess, match="outside the regions changed"):
        fresh.check_canaries()


def test_word_accesses_are_checked_both_ways(ram: FuzzRam) -> None:
    ram.mem.write_u64(C.end - 8, 7)
    assert ram.mem.read_u64(C.end - 8) == 7
    for gpa in (A.end - 1, 0x1_8000, C.end - 2):  # straddling A's end, in the hole, past C
        with pytest.raises(GuestAddressOutOfRange):
            ram.mem.read_u32(gpa)
        with pytest.raises(GuestAddressOutOfRange):
            ram.mem.write_u32(gpa, 1)
    ram.check_canaries()
