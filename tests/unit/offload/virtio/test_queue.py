"""Split virtqueue: pop/push ordering, index wrap, bad rings, notifications."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from offload.errors import (
    DescriptorAddressOutOfRange,
    InvalidAvailRingIndex,
    InvalidHeadIndex,
    VringAddressOutOfRange,
    VringAreasOverlap,
)
from offload.virtio.queue import (
    AVAIL_F_NO_INTERRUPT,
    USED_F_NO_NOTIFY,
    SplitQueue,
    vring_need_event,
)
from tests.unit.offload.ringbuilder import Buf, DriverRing, GuestRam


@pytest.fixture
def ram() -> Iterator[GuestRam]:
    r = GuestRam(region_size=256 * 1024)
    yield r
    r.close()


def simple_chain(ring: DriverRing) -> int:
    return ring.add_chain([Buf(ring.alloc(4), 4), Buf(ring.alloc(4), 4, True)])


def test_empty_queue_pops_none(ram: GuestRam) -> None:
    assert DriverRing(ram).queue().pop() is None


def test_pop_in_order_then_push_publishes(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=4)
    q = ring.queue()
    heads = [simple_chain(ring) for _ in range(2)]
    ring.publish(*heads)
    got = [q.pop(), q.pop(), q.pop()]
    assert [c.head for c in got if c] == heads and got[2] is None
    q.push(heads[1], 3)
    q.push_many([(heads[0], 4)])
    assert ring.take_used() == [(heads[1], 3), (heads[0], 4)]
    assert q.used_idx == 2 and q.last_avail_idx == 2


def test_indices_wrap_at_2_16(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=4)
    q = ring.queue()
    ring.avail_idx = ring.used_seen = 0xFFFE
    q.last_avail_idx = 0xFFFE
    q.used_idx = 0xFFFE
    heads = [simple_chain(ring) for _ in range(4)]
    ring.publish(*heads)
    for expected in heads:
        chain = q.pop()
        assert chain is not None and chain.head == expected
        q.push(chain.head, 1)
    assert q.pop() is None
    assert q.last_avail_idx == 2 and q.used_idx == 2
    assert [h for h, _ in ring.take_used()] == heads


def test_push_many_publishes_once_and_ignores_empty(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=4)
    q = ring.queue()
    q.push_many([])
    assert ring.used_idx() == 0
    q.push_many([(0, 1), (1, 2), (2, 3)])
    assert ring.used_idx() == 3
    with pytest.raises(ValueError):
        q.push(4, 0)


def test_avail_index_jump_is_fatal(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=4)
    q = ring.queue()
    ring.set_avail_idx(5)
    with pytest.raises(InvalidAvailRingIndex):
        q.pop()
    assert q.last_avail_idx == 0


def test_avail_index_going_backwards_is_fatal(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=4)
    q = ring.queue()
    q.last_avail_idx = 10
    ring.set_avail_idx(9)
    with pytest.raises(InvalidAvailRingIndex):
        q.pop()


def test_head_index_out_of_range_is_fatal(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=4)
    q = ring.queue()
    ring.publish(4)
    with pytest.raises(InvalidHeadIndex):
        q.pop()


def test_rings_outside_memory_are_fatal(ram: GuestRam) -> None:
    q = SplitQueue(
        ram.mem,
        size=8,
        desc_gpa=ram.end_gpa - 64,
        avail_gpa=ram.base_gpa,
        used_gpa=ram.base_gpa + 1024,
        event_idx=False,
    )
    with pytest.raises(VringAddressOutOfRange):
        q.pop()


def test_bad_sizes_are_refused(ram: GuestRam) -> None:
    for size in (0, 3, 65536):
        with pytest.raises(ValueError):
            SplitQueue(ram.mem, size=size, desc_gpa=0, avail_gpa=0, used_gpa=0, event_idx=False)


def test_rings_follow_memory_table_changes(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=4)
    q = ring.queue()
    assert q.pop() is None
    ram.mem.remove_region(ram.regions[0])
    with pytest.raises(VringAddressOutOfRange):
        q.pop()
    ram.mem.add_region(ram.regions[0], ram.fd)
    ring.publish(simple_chain(ring))
    assert q.pop() is not None


def test_load_used_idx_resumes_from_ring(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=4)
    ram.write(ring.used_gpa + 2, struct.pack("<H", 7))
    q = ring.queue()
    assert q.load_used_idx() == 7 and q.used_idx == 7


def test_no_interrupt_flag_without_event_idx(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=4)
    q = ring.queue()
    assert not q.should_notify()  # nothing pushed
    q.push(0, 0)
    assert q.should_notify()
    assert not q.should_notify()  # already signalled
    ring.set_avail_flags(AVAIL_F_NO_INTERRUPT)
    q.push(1, 0)
    assert not q.should_notify()


def test_event_idx_notifies_only_when_crossing_used_event(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=8, event_idx=True)
    q = ring.queue()
    q.push(0, 0)
    assert q.should_notify()  # first signal is always sent
    ring.set_used_event(3)  # driver: interrupt me once used.idx passes 3
    q.push(1, 0)  # used.idx 2
    assert not q.should_notify()
    q.push_many([(2, 0), (3, 0)])  # used.idx 4 crosses 3
    assert q.should_notify()
    q.push(4, 0)
    assert not q.should_notify()


def test_event_idx_revalidates_after_lapping(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=8, event_idx=True)
    q = ring.queue()
    q.push(0, 0)
    assert q.should_notify()
    ring.set_used_event(0)
    q.used_idx = 100  # SET_VRING_BASE-style jump forgets the last signal
    q.push(1, 0)
    assert q.should_notify()


def test_set_avail_event_rearms(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=4, event_idx=True)
    q = ring.queue()
    ring.publish(simple_chain(ring))
    assert q.pop() is not None
    q.set_avail_event()
    assert ring.avail_event() == 1
    assert not q.has_available()
    ring.publish(simple_chain(ring))
    assert q.has_available()


def test_set_avail_event_is_noop_without_event_idx(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=4)
    q = ring.queue()
    q.last_avail_idx = 3
    q.set_avail_event()
    assert ring.avail_event() == 0


def test_vring_need_event_wraps() -> None:
    assert vring_need_event(0xFFFF, 1, 0xFFFE)
    assert not vring_need_event(5, 5, 3)
    assert vring_need_event(4, 5, 3)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def on_pop(self, head: int) -> None:
        self.events.append(("pop", head))

    def on_push(self, head: int) -> None:
        self.events.append(("push", head))


def test_inflight_hooks_see_pop_and_push_after_publish(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=4)
    rec = Recorder()
    q = ring.queue(rec)
    head = simple_chain(ring)
    ring.publish(head)
    assert q.pop() is not None
    assert rec.events == [("pop", head)]
    q.push(head, 1)
    assert rec.events[-1] == ("push", head) and ring.used_idx() == 1


def test_chain_at_walks_without_avail_ring(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=4)
    q = ring.queue()
    head = simple_chain(ring)
    chain = q.chain_at(head)
    assert chain.readable_len == 4 and q.last_avail_idx == 0
    with pytest.raises(InvalidHeadIndex):
        q.chain_at(4)


def test_ring_straddling_two_regions_is_fatal(ram: GuestRam) -> None:
    b = ram.regions[1].guest_phys_addr
    q = SplitQueue(
        ram.mem, size=8, desc_gpa=b - 64, avail_gpa=b, used_gpa=b + 1024, event_idx=False
    )
    with pytest.raises(VringAddressOutOfRange):
        q.pop()
    with pytest.raises(VringAddressOutOfRange):
        q.push(0, 0)


def test_malformed_chain_still_reaches_the_inflight_hooks(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=4)
    rec = Recorder()
    q = ring.queue(rec)
    ring.set_desc(0, ram.end_gpa, 16, 0, 0)  # buffer outside memory
    ring.publish(0)
    with pytest.raises(DescriptorAddressOutOfRange):
        q.pop()
    q.push(0, 0)
    assert rec.events == [("pop", 0), ("push", 0)]


def _used_flags(ring: DriverRing) -> int:
    return int(struct.unpack("<H", ring.ram.read(ring.used_gpa, 2))[0])


def test_kicks_are_suppressed_with_no_notify_while_draining(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=4)
    q = ring.queue()
    q.disable_kicks()
    assert _used_flags(ring) == USED_F_NO_NOTIFY
    q.enable_kicks()
    assert _used_flags(ring) == 0
    assert ring.avail_event() == 0  # no EVENT_IDX: avail_event untouched


def test_kick_suppression_with_event_idx_uses_avail_event_only(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=4, event_idx=True)
    q = ring.queue()
    ring.publish(simple_chain(ring))
    q.disable_kicks()
    assert _used_flags(ring) == 0
    assert q.pop() is not None
    q.enable_kicks()
    assert ring.avail_event() == 1 and _used_flags(ring) == 0


def test_signal_used_calls_the_notifier_when_the_driver_waits(ram: GuestRam) -> None:
    ring = DriverRing(ram, size=8, event_idx=True)
    q = ring.queue()
    q.push(0, 1)
    q.signal_used()  # no notifier: the pending signal is kept for should_notify
    calls: list[int] = []
    q.notifier = lambda: calls.append(ring.used_idx())
    q.signal_used()
    assert calls == [1]  # first signal always goes out, after used.idx is published
    q.signal_used()
    assert calls == [1]  # nothing pushed since
    ring.set_used_event(5)  # driver: "wake me when used.idx passes 5"
    q.push(1, 1)
    q.signal_used()
    assert calls == [1] and not q.should_notify()
    q.push_many([(2, 1), (3, 1), (4, 1), (5, 1)])
    q.signal_used()
    assert calls == [1, 6]
    assert not q.should_notify()


@pytest.mark.parametrize(
    ("desc", "avail", "used"),
    [(0, 0, 0), (0, 512, 512 + 4), (0, 512, 100), (1024, 0, 1024 + 127)],
)
def test_used_ring_overlapping_the_other_areas_is_fatal(
    ram: GuestRam, desc: int, avail: int, used: int
) -> None:
    # Found by the fuzzer (fuzz/corpus/blk/crash-used-ring-over-avail-ring):
    # with used.idx over avail.idx every completion published a new request
    # and the drain never ended.
    base = ram.base_gpa
    q = SplitQueue(
        ram.mem, size=8, desc_gpa=base + desc, avail_gpa=base + avail, used_gpa=base + used,
        event_idx=True,
    )  # fmt: skip
    with pytest.raises(VringAreasOverlap):
        q.pop()
    with pytest.raises(VringAreasOverlap):
        q.push(0, 0)


def test_areas_that_only_touch_are_accepted(ram: GuestRam) -> None:
    base = ram.base_gpa
    avail = base + 16 * 8
    used = avail + 6 + 2 * 8
    q = SplitQueue(ram.mem, size=8, desc_gpa=base, avail_gpa=avail, used_gpa=used, event_idx=True)
    assert q.pop() is None
