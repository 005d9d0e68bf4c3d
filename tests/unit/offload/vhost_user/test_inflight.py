"""Inflight tracking: region layout, hooks on a real SplitQueue, recovery after a crash.

A "crash" is modelled by dropping the ``InflightRegion`` object without any
clean-up and mapping the same memfd again, as a restarted back-end would after
QEMU hands it back with SET_INFLIGHT_FD.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from offload.devices.base import DeviceBackend
from offload.vhost_user.effects import SetInflightFd, SetMemTable, StartVring, VringConfig
from offload.vhost_user.errors import InflightRegionInvalid
from offload.vhost_user.inflight import (
    INFLIGHT_VERSION,
    InflightRegion,
    inflight_queue_size,
    inflight_region_size,
)
from offload.vhost_user.messages import RegionDescription
from offload.vhost_user.session import Session
from offload.virtio.queue import SplitQueue
from tests.unit.offload.ringbuilder import Buf, DriverRing, GuestRam

SIZE = 16
HEADER = struct.Struct("=QHHHH")
DESC = struct.Struct("=B5xHQ")


@pytest.fixture
def ram() -> Iterator[GuestRam]:
    r = GuestRam(region_size=256 * 1024)
    yield r
    r.close()


@pytest.fixture
def shm() -> Iterator[int]:
    fd = os.memfd_create("inflight-test")
    os.ftruncate(fd, inflight_region_size(2, SIZE))
    yield fd
    os.close(fd)


def region(fd: int, queue_size: int = SIZE) -> InflightRegion:
    return InflightRegion(
        fd,
        mmap_size=inflight_region_size(2, queue_size),
        mmap_offset=0,
        num_queues=2,
        queue_size=queue_size,
    )


def raw(fd: int, queue: int) -> bytes:
    block = inflight_queue_size(SIZE)
    return os.pread(fd, block, queue * block)


def add_requests(ring: DriverRing, n: int) -> list[int]:
    heads = []
    for _ in range(n):
        hdr = ring.alloc(16, b"h" * 16)
        status = ring.alloc(1)
        heads.append(ring.add_chain([Buf(hdr, 16), Buf(status, 1, writable=True)]))
    ring.publish(*heads)
    return heads


def used_id_reader(ring: DriverRing) -> Callable[[int], int]:
    def read(i: int) -> int:
        slot = ring.used_gpa + 4 + 8 * (i % ring.size)
        return int(struct.unpack("<I", ring.ram.read(slot, 4))[0])

    return read


def test_sizes_are_64_byte_aligned_blocks() -> None:
    assert HEADER.size == 16 and DESC.size == 16
    assert inflight_queue_size(128) == 16 + 16 * 128 + 48  # 2064 rounded up to 2112
    assert inflight_queue_size(1) == 64
    assert inflight_region_size(4, 256) == 4 * inflight_queue_size(256)


def test_fresh_region_is_initialised_on_first_recovery(ram: GuestRam, shm: int) -> None:
    ring = DriverRing(ram, size=SIZE)
    inflight = region(shm)
    rec = inflight.queue(1).recover(0, used_id_reader(ring))
    assert rec.fresh and rec.resubmit == () and rec.last_avail_idx == 0
    features, version, desc_num, last_batch_head, used_idx = HEADER.unpack_from(raw(shm, 1))
    assert (features, version, desc_num, last_batch_head, used_idx) == (
        0,
        INFLIGHT_VERSION,
        SIZE,
        0,
        0,
    )
    assert HEADER.unpack_from(raw(shm, 0))[1] == 0  # other queue untouched
    inflight.close()


def test_hooks_write_the_documented_layout(ram: GuestRam, shm: int) -> None:
    ring = DriverRing(ram, size=SIZE)
    inflight = region(shm)
    iq = inflight.queue(0)
    iq.recover(0, used_id_reader(ring))
    queue = ring.queue(inflight=iq)
    a, b = add_requests(ring, 2)
    assert queue.pop() is not None and queue.pop() is not None
    data = raw(shm, 0)
    assert DESC.unpack_from(data, 16 + 16 * a) == (1, 0, 0)
    assert DESC.unpack_from(data, 16 + 16 * b) == (1, 0, 1)
    queue.push(b, 1)
    data = raw(shm, 0)
    assert DESC.unpack_from(data, 16 + 16 * b)[0] == 0
    _, _, _, last_batch_head, used_idx = HEADER.unpack_from(data)
    assert (last_batch_head, used_idx) == (b, 1)
    assert iq.inflight_heads() == [a]
    inflight.close()


def test_crash_with_out_of_order_completion_resubmits_in_pop_order(ram: GuestRam, shm: int) -> None:
    ring = DriverRing(ram, size=SIZE)
    first = region(shm)
    iq = first.queue(0)
    iq.recover(0, used_id_reader(ring))
    queue = ring.queue(inflight=iq)
    heads = add_requests(ring, 4)
    for _ in heads:
        assert queue.pop() is not None
    queue.push(heads[2], 1)  # completes out of order
    # crash: the old mapping is simply forgotten
    del first, iq, queue

    second = region(shm)
    rec = second.queue(0).recover(ring.used_idx(), used_id_reader(ring))
    assert not rec.fresh
    assert rec.resubmit == (heads[0], heads[1], heads[3])
    assert rec.last_avail_idx == 1 + 3  # used.idx + resubmitted == everything popped
    second.close()


def test_crash_between_used_publication_and_hook_is_repaired(ram: GuestRam, shm: int) -> None:
    ring = DriverRing(ram, size=SIZE)
    first = region(shm)
    iq = first.queue(0)
    iq.recover(0, used_id_reader(ring))
    queue = ring.queue(inflight=iq)
    a, b = add_requests(ring, 2)
    queue.pop()
    queue.pop()
    # The device published the used element and used.idx for ``a`` and died
    # before on_push ran: the tracker still marks ``a`` inflight.
    queue.inflight = None
    queue.push(a, 1)
    assert first.queue(0).is_inflight(a)
    del first, iq, queue

    second = region(shm)
    rec = second.queue(0).recover(ring.used_idx(), used_id_reader(ring))
    assert rec.resubmit == (b,)  # not ``a``: that would complete it twice
    assert rec.last_avail_idx == 2
    assert second.queue(0).used_idx == 1
    second.close()


def test_resume_completes_every_request_exactly_once(ram: GuestRam, shm: int) -> None:
    ring = DriverRing(ram, size=SIZE)
    first = region(shm)
    iq = first.queue(0)
    iq.recover(0, used_id_reader(ring))
    queue = ring.queue(inflight=iq)
    heads = add_requests(ring, 5)
    for _ in range(3):
        queue.pop()
    queue.push(heads[1], 1)
    del first, iq, queue

    # Restarted back-end: resubmit, then continue with the avail ring.
    second = region(shm)
    iq2 = second.queue(0)
    rec = iq2.recover(ring.used_idx(), used_id_reader(ring))
    queue = ring.queue(inflight=iq2)
    queue.load_used_idx()
    queue.last_avail_idx = rec.last_avail_idx
    for head in rec.resubmit:
        queue.push(queue.chain_at(head).head, 1)
    while (popped := queue.pop()) is not None:
        queue.push(popped.head, 1)
    completed = [head for head, _ in ring.take_used()]
    assert sorted(completed) == sorted(heads)
    assert completed[:3] == [heads[1], heads[0], heads[2]]
    assert iq2.inflight_heads() == []
    # A second restart with nothing in flight resumes at the same place.
    third = region(shm)
    again = third.queue(0).recover(ring.used_idx(), used_id_reader(ring))
    assert again.resubmit == () and again.last_avail_idx == 5
    second.close()
    third.close()


def test_counter_continues_after_recovery(ram: GuestRam, shm: int) -> None:
    ring = DriverRing(ram, size=SIZE)
    first = region(shm)
    first.queue(0).recover(0, used_id_reader(ring))
    queue = ring.queue(inflight=first.queue(0))
    a, b = add_requests(ring, 2)
    queue.pop()
    queue.pop()
    second = region(shm)
    iq = second.queue(0)
    iq.recover(ring.used_idx(), used_id_reader(ring))
    queue = ring.queue(inflight=iq)
    queue.last_avail_idx = 2
    (c,) = add_requests(ring, 1)
    queue.pop()
    assert iq.counter_of(c) > max(iq.counter_of(a), iq.counter_of(b))
    assert iq.inflight_heads() == [a, b, c]
    first.close()
    second.close()


def test_mismatched_or_corrupt_regions_are_refused(ram: GuestRam, shm: int) -> None:
    ring = DriverRing(ram, size=SIZE)
    inflight = region(shm)
    inflight.queue(0).recover(0, used_id_reader(ring))
    # Same memory, read as a region for 8-descriptor queues: desc_num disagrees.
    small = InflightRegion(
        shm, mmap_size=inflight_region_size(2, SIZE), mmap_offset=0, num_queues=2, queue_size=8
    )
    with pytest.raises(InflightRegionInvalid):
        small.queue(0).recover(0, used_id_reader(ring))
    # used.idx far ahead of what was tracked: the region is not this ring's.
    with pytest.raises(InflightRegionInvalid):
        inflight.queue(0).recover(SIZE + 1, used_id_reader(ring))
    with pytest.raises(InflightRegionInvalid):
        inflight.queue(2)
    with pytest.raises(InflightRegionInvalid):
        InflightRegion(shm, mmap_size=64, mmap_offset=0, num_queues=2, queue_size=SIZE)
    small.close()
    inflight.close()


# --------------------------------------------------------------------------- server glue


class RecordingDevice(DeviceBackend):
    """Completes every chain at once and remembers the order it saw heads in."""

    def __init__(self) -> None:
        super().__init__(num_queues=2, max_queue_size=SIZE)
        self.seen: list[int] = []
        self.done = threading.Event()
        self.expect = 0

    def features(self) -> int:
        return 1 << 32

    def process_queue(self, index: int, queue: SplitQueue) -> bool:
        completions = []
        while (chain := queue.pop()) is not None:
            self.seen.append(chain.head)
            completions.append((chain.head, 1))
        queue.push_many(completions)
        if len(self.seen) >= self.expect:
            self.done.set()
        return queue.should_notify()


def test_server_resumes_a_crashed_backend_from_the_inflight_region(ram: GuestRam, shm: int) -> None:
    ring = DriverRing(ram, size=SIZE)
    crashed = region(shm)
    iq = crashed.queue(0)
    iq.recover(0, used_id_reader(ring))
    old_queue = ring.queue(inflight=iq)
    heads = add_requests(ring, 4)
    for _ in range(3):
        old_queue.pop()
    old_queue.push(heads[1], 1)  # heads 0 and 2 in flight, 3 never popped
    del crashed, iq, old_queue

    device = RecordingDevice()
    device.expect = 3
    ours, theirs = socket.socketpair()
    session = Session(device, ours)
    kick = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        session._apply(
            SetMemTable(
                tuple(
                    RegionDescription(r.guest_phys_addr, r.size, r.user_addr, r.mmap_offset)
                    for r in ram.regions
                ),
                (ram.fd, ram.fd),
            ),
            [],
        )
        session._apply(SetInflightFd(shm, inflight_region_size(2, SIZE), 0, 2, SIZE), [])
        uva = ram.regions[0].user_addr - ram.regions[0].guest_phys_addr
        config = VringConfig(
            index=0,
            size=SIZE,
            desc_user_addr=ring.desc_gpa + uva,
            avail_user_addr=ring.avail_gpa + uva,
            used_user_addr=ring.used_gpa + uva,
            base=ring.used_idx(),  # what QEMU sends after losing the back-end
            event_idx=False,
            enabled=True,
        )
        session._apply(StartVring(config, kick), [])
        assert device.done.wait(10)
        assert device.seen == [heads[0], heads[2], heads[3]]
        assert sorted(h for h, _ in ring.take_used()) == sorted(heads)
        assert session._stop_vring(0) == 4
    finally:
        session.close()
        theirs.close()
