"""BlkDevice over the file engine: out-of-order completion, no stall across
rings, polling mode, and QoS limits swapped on a live device."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Iterator

import pytest

from offload.devices.blk import S_OK, T_IN, T_OUT, BlkDevice
from offload.storage.file_engine import FileEngine
from offload.storage.limits import Limits
from tests.unit.offload.blkreq import add_request, make_volume
from tests.unit.offload.ringbuilder import DriverRing, GuestRam

SIZE = 1 << 20
SLOW_SECTOR = 0


@pytest.fixture
def ram() -> Iterator[GuestRam]:
    r = GuestRam(region_size=1 << 20)
    yield r
    assert r.canaries_intact()
    r.close()


class Gate:
    """An injected slow disk: requests at SLOW_SECTOR wait in the pool until opened."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.waiting = threading.Event()

    def __call__(self, op: str, offset: int) -> float:
        if offset != SLOW_SECTOR * 512:
            return 0.0
        if threading.current_thread().name.startswith("blk-io"):
            self.waiting.set()
            assert self.opened.wait(20)
        return 1e-9  # on the ring's thread: "would block", go to the pool


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.opened.set()


@pytest.fixture
def dev(gate: Gate) -> Iterator[BlkDevice]:
    vol, path = make_volume(SIZE)
    os.pwrite(vol.fd, b"S" * 512 + b"F" * 512, 0)
    os.pwrite(vol.fd, b"G" * 512, 64 * 512)
    engine = FileEngine(vol, workers=2, delay=gate)
    d = BlkDevice(engine, num_queues=2, serial="f-1")
    d.ack_features(d.features())
    yield d
    gate.opened.set()
    engine.close()
    os.unlink(path)


def wait_readable(fd: int, timeout: float = 20.0) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(int(timeout * 1000)))


def test_a_slow_request_completes_after_the_fast_one_behind_it(
    dev: BlkDevice, gate: Gate, ram: GuestRam
) -> None:
    ring = DriverRing(ram, size=16)
    slow = add_request(ring, T_IN, SLOW_SECTOR, data_in_len=512)
    fast = add_request(ring, T_IN, 1, data_in_len=512)
    queue = ring.device_queue()
    dev.process_queue(0, queue)
    assert gate.waiting.wait(20)
    # The fast read was served from the page cache while the slow one waits.
    assert ring.take_used() == [(fast.head, 513)]
    assert fast.data_in(ring) == b"F" * 512 and fast.status(ring) == S_OK
    assert dev.in_flight() == 1
    gate.opened.set()
    assert wait_readable(dev.queue_events(0)[0])
    dev.process_queue(0, queue)
    assert ring.take_used() == [(slow.head, 513)]
    assert slow.data_in(ring) == b"S" * 512 and slow.status(ring) == S_OK
    assert dev.in_flight() == 0


def test_a_slow_request_on_one_ring_does_not_stall_another(
    dev: BlkDevice, gate: Gate, ram: GuestRam
) -> None:
    ring0 = DriverRing(ram, size=16)
    ring1 = DriverRing(ram, size=16, base_gpa=ram.base_gpa + ram.region_size // 2)
    slow = add_request(ring0, T_IN, SLOW_SECTOR, data_in_len=512)
    dev.process_queue(0, ring0.device_queue())
    assert gate.waiting.wait(20)
    other = add_request(ring1, T_IN, 64, data_in_len=512)
    write = add_request(ring1, T_OUT, 128, data_out=b"w" * 512)
    dev.process_queue(1, ring1.device_queue())
    if dev.in_flight() > 1:  # writes may go to the pool (no RWF_NOWAIT for buffered writes)
        assert wait_readable(dev.queue_events(1)[0])
        dev.process_queue(1, ring1.device_queue())
    assert sorted(ring1.take_used()) == sorted([(other.head, 513), (write.head, 1)])
    assert other.data_in(ring1) == b"G" * 512
    assert ring0.take_used() == [] and slow.status(ring0) != S_OK
    gate.opened.set()
    assert wait_readable(dev.queue_events(0)[0])
    dev.process_queue(0, ring0.device_queue())
    assert ring0.take_used() == [(slow.head, 513)]


def test_polling_mode_serves_a_request_added_while_it_spins(ram: GuestRam) -> None:
    vol, path = make_volume(SIZE)
    engine = FileEngine(vol, workers=1)
    try:
        d = BlkDevice(engine, poll_us=2_000_000)
        d.ack_features(d.features())
        ring = DriverRing(ram, size=16)
        first = add_request(ring, T_IN, 1, data_in_len=512)
        second: list[int] = []

        def driver() -> None:
            deadline = time.monotonic() + 20
            while ring.used_idx() < 1 and time.monotonic() < deadline:
                os.sched_yield()
            second.append(add_request(ring, T_IN, 2, data_in_len=512).head)

        t = threading.Thread(target=driver)
        t.start()
        d.process_queue(0, ring.device_queue())  # returns once it spun 2 s idle
        t.join()
        assert ring.take_used() == [(first.head, 513), (second[0], 513)]
        assert not ring.device_queue().has_available()
    finally:
        engine.close()
        os.unlink(path)


def test_qos_limits_swap_on_a_live_device(dev: BlkDevice, ram: GuestRam) -> None:
    dev.qos = Limits(max_iops=2).limiter()
    ring = DriverRing(ram, size=16)
    reqs = [add_request(ring, T_IN, 8 + i, data_in_len=512) for i in range(5)]
    dev.process_queue(0, ring.device_queue())
    first = ring.take_used()
    assert 2 <= len(first) < 5  # the burst (one second's worth) and the refill since
    assert dev.qos_delay() > 0
    # A throttled ring is always run again, even if the bucket refilled meanwhile.
    assert dev.queue_timeout(0) >= 0.001 and dev.queue_timeout(1) == 0
    dev.qos = Limits().limiter()  # limits lifted (None): the rest go at once
    assert dev.qos is None and dev.qos_delay() == 0
    dev.process_queue(0, ring.device_queue())
    assert [h for h, _ in first + ring.take_used()] == [r.head for r in reqs]
    assert dev.queue_timeout(0) == 0
