"""Descriptor-chain walks: layout, direction split and every bound."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from offload.errors import (
    DescriptorAddressOutOfRange,
    DescriptorChainLoop,
    DescriptorIndexOutOfRange,
    DescriptorLengthOverflow,
    DescriptorOrderViolation,
    GuestDescriptorError,
    GuestIndirectTableInvalid,
)
from offload.virtio.chain import F_INDIRECT, F_NEXT, F_WRITE, MAX_INDIRECT_ENTRIES
from offload.virtio.iov import gather, split_back, split_front
from offload.virtio.queue import SplitQueue
from tests.unit.offload.ringbuilder import Buf, DriverRing, GuestRam

DESC = struct.Struct("<QIHH")


@pytest.fixture
def ring() -> Iterator[DriverRing]:
    ram = GuestRam(region_size=256 * 1024)
    yield DriverRing(ram, size=8)
    ram.close()


def pop_error(ring: DriverRing, q: SplitQueue, head: int) -> GuestDescriptorError:
    ring.publish(head)
    with pytest.raises(GuestDescriptorError) as info:
        q.pop()
    assert info.value.head == head
    assert q.last_avail_idx == ring.avail_idx  # consumed all the same
    return info.value


@pytest.mark.parametrize("indirect", [False, True])
def test_chain_splits_readable_and_writable(ring: DriverRing, indirect: bool) -> None:
    a = ring.alloc(16, b"H" * 16)
    b = ring.alloc(100, b"D" * 100)
    c = ring.alloc(1)
    head = ring.add_chain([Buf(a, 16), Buf(b, 100), Buf(c, 1, True)], indirect=indirect)
    ring.publish(head)
    chain = ring.queue().pop()
    assert chain is not None
    assert chain.head == head
    assert (chain.readable_len, chain.writable_len) == (116, 1)
    assert [v.nbytes for v in chain.readable] == [16, 100]
    assert bytes(chain.readable[1][:3]) == b"DDD"
    chain.writable[0][0] = 7
    assert ring.ram.read(c, 1) == b"\x07"


def test_indirect_after_direct_descriptors(ring: DriverRing) -> None:
    a = ring.alloc(16, b"x" * 16)
    w = ring.alloc(8)
    table = DESC.pack(w, 8, F_WRITE, 0)
    t = ring.alloc(16, table)
    ring.set_desc(0, a, 16, F_NEXT, 1)
    ring.set_desc(1, t, 16, F_INDIRECT | F_WRITE, 0)  # WRITE is ignored on the pointer
    ring.publish(0)
    chain = ring.queue().pop()
    assert chain is not None
    assert (chain.readable_len, chain.writable_len) == (16, 8)


def test_zero_length_buffers_are_skipped_without_address_check(ring: DriverRing) -> None:
    w = ring.alloc(4)
    ring.set_desc(0, 0xDEAD_0000_0000, 0, F_NEXT, 1)
    ring.set_desc(1, w, 4, F_WRITE, 0)
    ring.publish(0)
    chain = ring.queue().pop()
    assert chain is not None
    assert chain.readable == [] and chain.writable_len == 4


def test_loop_in_main_table(ring: DriverRing) -> None:
    a = ring.alloc(8)
    ring.set_desc(0, a, 8, F_NEXT, 1)
    ring.set_desc(1, a, 8, F_NEXT, 0)
    assert isinstance(pop_error(ring, ring.queue(), 0), DescriptorChainLoop)


def test_self_loop_in_indirect_table(ring: DriverRing) -> None:
    a = ring.alloc(8)
    t = ring.alloc(32, DESC.pack(a, 8, F_NEXT, 1) + DESC.pack(a, 8, F_NEXT, 1))
    ring.set_desc(0, t, 32, F_INDIRECT, 0)
    assert isinstance(pop_error(ring, ring.queue(), 0), DescriptorChainLoop)


def test_next_outside_table(ring: DriverRing) -> None:
    a = ring.alloc(8)
    ring.set_desc(0, a, 8, F_NEXT, 8)
    assert isinstance(pop_error(ring, ring.queue(), 0), DescriptorIndexOutOfRange)


@pytest.mark.parametrize(
    ("length", "flags"),
    [
        (0, F_INDIRECT),
        (24, F_INDIRECT),
        (16 * (MAX_INDIRECT_ENTRIES + 1), F_INDIRECT),
        (16, F_INDIRECT | F_NEXT),
    ],
)
def test_bad_indirect_pointer(ring: DriverRing, length: int, flags: int) -> None:
    t = ring.alloc(16 * (MAX_INDIRECT_ENTRIES + 1))
    ring.set_desc(0, t, length, flags, 1)
    ring.set_desc(1, t, 16, 0, 0)
    assert isinstance(pop_error(ring, ring.queue(), 0), GuestIndirectTableInvalid)


def test_nested_indirect(ring: DriverRing) -> None:
    inner = ring.alloc(16, DESC.pack(ring.alloc(8), 8, 0, 0))
    outer = ring.alloc(16, DESC.pack(inner, 16, F_INDIRECT, 0))
    ring.set_desc(0, outer, 16, F_INDIRECT, 0)
    assert isinstance(pop_error(ring, ring.queue(), 0), GuestIndirectTableInvalid)


def test_indirect_table_outside_memory(ring: DriverRing) -> None:
    ring.set_desc(0, ring.ram.end_gpa - 8, 16, F_INDIRECT, 0)
    assert isinstance(pop_error(ring, ring.queue(), 0), GuestIndirectTableInvalid)


def test_readable_after_writable(ring: DriverRing) -> None:
    a = ring.alloc(8)
    ring.set_desc(0, a, 8, F_WRITE | F_NEXT, 1)
    ring.set_desc(1, a, 8, 0, 0)
    assert isinstance(pop_error(ring, ring.queue(), 0), DescriptorOrderViolation)


@pytest.mark.parametrize("where", ["outside", "straddle", "wrap"])
def test_buffer_address_checks(ring: DriverRing, where: str) -> None:
    ram = ring.ram
    addr, length = {
        "outside": (ram.end_gpa, 1),
        "straddle": (ram.regions[1].guest_phys_addr - 4, 8),
        "wrap": ((1 << 64) - 8, 16),
    }[where]
    ring.set_desc(0, addr, length, 0, 0)
    assert isinstance(pop_error(ring, ring.queue(), 0), DescriptorAddressOutOfRange)


def test_total_length_overflow(ring: DriverRing) -> None:
    ring.set_desc(0, ring.data_gpa, 0xFFFF_FFFF, 0, 0)  # rejected before mapping
    err = pop_error(ring, ring.queue(), 0)
    assert isinstance(err, DescriptorAddressOutOfRange | DescriptorLengthOverflow)


def test_length_sum_overflow_is_caught() -> None:
    ram = GuestRam(region_size=1 << 31)  # sparse memfd: costs nothing
    try:
        ring = DriverRing(ram, size=4)
        ring.set_desc(0, ram.base_gpa, 0x8000_0000, F_NEXT, 1)
        ring.set_desc(1, ram.base_gpa, 0x8000_0000, 0, 0)
        assert isinstance(pop_error(ring, ring.queue(), 0), DescriptorLengthOverflow)
    finally:
        ram.close()


def test_iov_helpers_split_without_copying() -> None:
    buf = bytearray(b"0123456789")
    views = [memoryview(buf)[:3], memoryview(buf)[3:7], memoryview(buf)[7:]]
    front, rest = split_front(views, 5)
    assert gather(front) == b"01234" and gather(rest) == b"56789"
    rest[0][0] = ord("X")
    assert buf[5] == ord("X")
    body, tail = split_back(views, 4)
    assert gather(body) == b"01234X" and gather(tail) == b"6789"
    assert split_front(views, 99)[1] == [] and gather(split_front(views, 99)[0]) == bytes(buf)
    assert split_back(views, 99)[0] == []
    assert gather(split_back(views, 3)[1]) == b"789"
    assert gather(split_front(views, 3)[0]) == b"012"
