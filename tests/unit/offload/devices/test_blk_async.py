"""BlkDevice over an asynchronous engine (RbdImageIo on a fake librbd image).

Requests stay popped and in flight until the engine completes them; the status
byte and the used ring are written only then, by the ring's own thread, in the
order the engine completed them; a stopping ring waits for what is in flight.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from offload.devices.blk import S_IOERR, S_OK, T_DISCARD, T_FLUSH, T_IN, T_OUT, BlkDevice
from offload.storage.rbd_io import RbdImageIo
from offload.virtio import features as vf
from tests.unit.offload.blkreq import STATUS_UNSET, add_request, segments
from tests.unit.offload.ringbuilder import DriverRing, GuestRam
from tests.unit.offload.storage.fake_rbd import FakeImage

SIZE = 1 << 20


@pytest.fixture
def ram() -> Iterator[GuestRam]:
    r = GuestRam(region_size=512 * 1024)
    yield r
    assert r.canaries_intact()
    r.close()


@pytest.fixture
def image() -> FakeImage:
    return FakeImage(SIZE)


@pytest.fixture
def dev(image: FakeImage) -> BlkDevice:
    d = BlkDevice(RbdImageIo(image, "p/i"), serial="rbd-1")
    d.ack_features(d.features())
    return d


def test_requests_complete_only_when_the_engine_does_and_in_its_order(
    dev: BlkDevice, image: FakeImage, ram: GuestRam
) -> None:
    ring = DriverRing(ram, size=16)
    payload = os.urandom(4096)
    w = add_request(ring, T_OUT, 8, data_out=payload)
    r = add_request(ring, T_IN, 64, data_in_len=4096)
    f = add_request(ring, T_FLUSH)
    queue = ring.device_queue()
    dev.process_queue(0, queue)
    # All three submitted at once; nothing completed to the driver yet.
    assert [op.kind for op in image.pending] == ["write", "read", "flush"]
    assert dev.in_flight() == 3
    assert ring.take_used() == []
    assert w.status(ring) == STATUS_UNSET
    # The engine finishes the flush, then the read, then the write.
    image.complete([2, 1])
    assert readable(dev.queue_events(0)[0])
    assert dev.process_queue(0, queue)
    assert ring.take_used() == [(f.head, 1), (r.head, 4097)]
    assert r.status(ring) == S_OK and f.status(ring) == S_OK
    assert w.status(ring) == STATUS_UNSET
    image.complete()
    dev.process_queue(0, queue)
    assert ring.take_used() == [(w.head, 1)]
    assert w.status(ring) == S_OK
    assert bytes(image.data[8 * 512 : 8 * 512 + 4096]) == payload
    assert dev.in_flight() == 0
    stats = dev.stats()
    assert stats.requests["out"] == 1 and stats.write_bytes == 4096
    assert sum(stats.latency_buckets) == 3


def test_engine_errors_complete_with_ioerr(dev: BlkDevice, image: FakeImage, ram: GuestRam) -> None:
    ring = DriverRing(ram, size=16)
    w = add_request(ring, T_OUT, 0, data_out=b"x" * 512)
    queue = ring.device_queue()
    dev.process_queue(0, queue)
    image.fail_with = -108
    image.complete()
    dev.process_queue(0, queue)
    assert ring.take_used() == [(w.head, 1)]
    assert w.status(ring) == S_IOERR
    assert dev.stats().errors["io"] == 1


def test_a_refused_submission_completes_with_ioerr(
    dev: BlkDevice, image: FakeImage, ram: GuestRam
) -> None:
    import rbd

    ring = DriverRing(ram, size=16)
    image.refuse = rbd.InvalidArgument("no")
    w = add_request(ring, T_OUT, 0, data_out=b"x" * 512)
    queue = ring.device_queue()
    dev.process_queue(0, queue)
    dev.process_queue(0, queue)
    assert ring.take_used() == [(w.head, 1)]
    assert w.status(ring) == S_IOERR
    assert dev.in_flight() == 0


def test_bad_requests_never_reach_the_engine(
    dev: BlkDevice, image: FakeImage, ram: GuestRam
) -> None:
    ring = DriverRing(ram, size=16)
    past_end = add_request(ring, T_IN, SIZE // 512, data_in_len=512)
    dev.process_queue(0, ring.device_queue())
    assert image.pending == []
    assert ring.take_used() == [(past_end.head, 1)]
    assert past_end.status(ring) == S_IOERR


def test_multi_segment_discard_completes_once_all_parts_have(
    dev: BlkDevice, image: FakeImage, ram: GuestRam
) -> None:
    image.data[:] = b"\x01" * SIZE
    ring = DriverRing(ram, size=16)
    d = add_request(ring, T_DISCARD, data_out=segments((0, 8, 0), (64, 8, 0)))
    queue = ring.device_queue()
    dev.process_queue(0, queue)
    assert [op.kind for op in image.pending] == ["discard", "discard"]
    image.complete([1])
    dev.process_queue(0, queue)
    assert ring.take_used() == []  # one part left
    image.complete()
    dev.process_queue(0, queue)
    assert ring.take_used() == [(d.head, 1)]
    assert d.status(ring) == S_OK
    assert bytes(image.data[0:4096]) == bytes(4096)
    assert bytes(image.data[4096:8192]) == b"\x01" * 4096


def test_write_through_completes_after_the_following_flush(image: FakeImage, ram: GuestRam) -> None:
    dev = BlkDevice(RbdImageIo(image, "p/i"))
    dev.ack_features(dev.features() & ~vf.bit(vf.BLK_FLUSH))
    assert not dev.writeback
    ring = DriverRing(ram, size=16)
    w = add_request(ring, T_OUT, 0, data_out=b"y" * 512)
    queue = ring.device_queue()
    dev.process_queue(0, queue)
    image.complete()  # the write: a flush is issued, the request still waits
    assert [op.kind for op in image.pending] == ["flush"]
    dev.process_queue(0, queue)
    assert ring.take_used() == []
    image.complete()
    dev.process_queue(0, queue)
    assert ring.take_used() == [(w.head, 1)]
    assert image.flushes == 1


def test_a_stopping_ring_waits_for_its_requests_in_flight(
    dev: BlkDevice, image: FakeImage, ram: GuestRam
) -> None:
    ring = DriverRing(ram, size=16)
    heads = [add_request(ring, T_IN, i * 8, data_in_len=4096).head for i in range(4)]
    queue = ring.device_queue()
    dev.process_queue(0, queue)
    timer = threading.Timer(0.05, image.complete)
    timer.start()
    dev.quiesce_queue(0, queue)
    timer.join()
    assert sorted(h for h, _ in ring.take_used()) == sorted(heads)
    assert dev.in_flight() == 0


def readable(fd: int) -> bool:
    import select

    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def test_requests_still_in_flight_after_the_quiesce_timeout_are_abandoned(
    dev: BlkDevice, image: FakeImage, ram: GuestRam
) -> None:
    ring = DriverRing(ram, size=16)
    add_request(ring, T_IN, 0, data_in_len=4096)
    queue = ring.device_queue()
    dev.process_queue(0, queue)
    dev.quiesce_timeout = 0.05
    old = dev.queue_events(0)
    assert not dev.quiesce_queue(0, queue)
    assert dev.queue_events(0) != old  # a fresh channel for the ring's next start
    assert dev.in_flight() == 0
    image.complete()  # the late completion goes nowhere: never pushed twice
    dev.process_queue(0, queue)
    assert ring.take_used() == []
