"""Unit tests of the driver-side ring logic in ``offload.testing``.

A tiny device written here (``FakeDevice``, plain ``struct`` reads of the
shared memory, single-threaded) consumes what the driver publishes and
completes it, so layout, free list, notification decisions and 16-bit index
wrap-around are checked without any back-end process.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload.testing import (
    DESC_F_INDIRECT,
    DESC_F_NEXT,
    DESC_F_WRITE,
    USED_F_NO_NOTIFY,
    BlkConfig,
    BlkQueue,
    BlkRequest,
    BlkType,
    DeviceUsedIndexJumped,
    DeviceUsedUnknownHead,
    DriverMemory,
    QueueFull,
    SplitQueueDriver,
    SplitRingLayout,
    vring_need_event,
)

Desc = tuple[int, int, int]  # addr, len, flags


class FakeDevice:
    """The device side of one split queue, enough to pop chains and push used elements."""

    def __init__(self, mem: DriverMemory, layout: SplitRingLayout, start: int = 0) -> None:
        self.mem = mem
        self.lay = layout
        self.last_avail = start
        self.used_idx = start

    def _u16(self, gpa: int) -> int:
        return int(struct.unpack("<H", self.mem.read(gpa, 2))[0])

    def avail_idx(self) -> int:
        return self._u16(self.lay.avail + 2)

    def desc(self, table: int, i: int) -> tuple[int, int, int, int]:
        addr, length, flags, nxt = struct.unpack("<QIHH", self.mem.read(table + 16 * i, 16))
        return addr, length, flags, nxt

    def walk(self, head: int) -> list[Desc]:
        addr, length, flags, nxt = self.desc(self.lay.desc, head)
        if flags & DESC_F_INDIRECT:
            assert length % 16 == 0
            table, n, i, out = addr, length // 16, 0, []
            while True:
                a, ln, f, nx = self.desc(table, i)
                out.append((a, ln, f))
                if not f & DESC_F_NEXT:
                    assert len(out) == n
                    return out
                i = nx
        out = [(addr, length, flags)]
        while flags & DESC_F_NEXT:
            addr, length, flags, nxt2 = self.desc(self.lay.desc, nxt)
            out.append((addr, length, flags))
            nxt = nxt2
        return out

    def pop(self) -> list[tuple[int, list[Desc]]]:
        idx = self.avail_idx()
        out = []
        while self.last_avail != idx:
            slot = self.last_avail % self.lay.size
            head = self._u16(self.lay.avail + 4 + 2 * slot)
            out.append((head, self.walk(head)))
            self.last_avail = (self.last_avail + 1) & 0xFFFF
        return out

    def push(self, head: int, length: int, *, publish: bool = True) -> None:
        slot = self.used_idx % self.lay.size
        self.mem.write(self.lay.used + 4 + 8 * slot, struct.pack("<II", head, length))
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        if publish:
            self.publish()

    def publish(self) -> None:
        self.mem.write(self.lay.used + 2, struct.pack("<H", self.used_idx))

    def set_avail_event(self, value: int) -> None:
        self.mem.write(self.lay.avail_event, struct.pack("<H", value))

    def used_event(self) -> int:
        return self._u16(self.lay.used_event)


@pytest.fixture
def mem() -> Iterator[DriverMemory]:
    m = DriverMemory([1 << 20, 1 << 20])
    yield m
    m.close()


def make_queue(
    mem: DriverMemory, size: int = 8, **kw: int | bool
) -> tuple[SplitQueueDriver, FakeDevice]:
    base = mem.alloc(SplitRingLayout.total_bytes(size), align=16)
    lay = SplitRingLayout.packed(size, base)
    start = int(kw.get("start_index", 0))
    vq = SplitQueueDriver(mem, lay, **kw)  # type: ignore[arg-type]
    return vq, FakeDevice(mem, lay, start)


# --------------------------------------------------------------------------- layout


def test_packed_layout_offsets_and_alignment() -> None:
    lay = SplitRingLayout.packed(256, 0x1000)
    assert lay.desc == 0x1000
    assert lay.avail == 0x1000 + 16 * 256
    assert lay.used == 0x1000 + 4096 + 520  # avail is 6 + 512 = 518 bytes, used 4-aligned
    assert lay.used % 4 == 0
    assert lay.used_event == lay.avail + 4 + 2 * 256
    assert lay.avail_event == lay.used + 4 + 8 * 256
    assert SplitRingLayout.total_bytes(256) == (lay.used - lay.desc) + 6 + 8 * 256
    assert SplitRingLayout.desc_bytes(4) == 64
    assert SplitRingLayout.avail_bytes(4) == 14
    assert SplitRingLayout.used_bytes(4) == 38


@pytest.mark.parametrize("size", [0, 3, 100, 65536])
def test_layout_rejects_bad_sizes(size: int) -> None:
    with pytest.raises(ValueError):
        SplitRingLayout.packed(size, 0)


def test_layout_rejects_unaligned_table() -> None:
    with pytest.raises(ValueError):
        SplitRingLayout.packed(8, 8)


def test_memory_regions_translate_three_address_spaces(mem: DriverMemory) -> None:
    r0, r1 = mem.regions
    assert r1.gpa > r0.gpa + r0.size  # a hole between regions
    assert r0.uva != r0.gpa and r1.offset == r0.offset + r0.size
    gpa = mem.alloc(100, align=4096, region=1)
    assert gpa % 4096 == 0
    assert mem.offset(gpa) == r1.offset + (gpa - r1.gpa)
    assert mem.uva(gpa) == r1.uva + (gpa - r1.gpa)
    mem.write(gpa, b"hello")
    assert mem.read(gpa, 5) == b"hello"
    assert os.pread(mem.fd, 5, mem.offset(gpa)) == b"hello"  # same pages as the fd
    with pytest.raises(ValueError):
        mem.offset(r0.gpa + r0.size - 2, 4)  # straddles the end of region 0
    with pytest.raises(MemoryError):
        mem.alloc(r1.size, region=1)


def test_memory_close_releases_the_memfd() -> None:
    m = DriverMemory([4096])
    fd = m.fd
    m.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    m.close()  # idempotent


# --------------------------------------------------------------------------- event index


def _reference_need_event(event: int, new: int, old: int) -> bool:
    i = old
    while i != new:
        if i == event:
            return True
        i = (i + 1) & 0xFFFF
    return False


@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 300),
)
def test_vring_need_event_matches_definition(event: int, old: int, step: int) -> None:
    new = (old + step) & 0xFFFF
    assert vring_need_event(event, new, old) == _reference_need_event(event, new, old)


def test_vring_need_event_across_wrap() -> None:
    assert vring_need_event(0xFFFF, 0x0001, 0xFFFE)
    assert vring_need_event(0x0000, 0x0001, 0xFFFE)
    assert not vring_need_event(0x0001, 0x0001, 0xFFFE)
    assert not vring_need_event(0xFFFD, 0x0001, 0xFFFE)


# --------------------------------------------------------------------------- free list


def test_chain_written_with_next_and_write_flags(mem: DriverMemory) -> None:
    vq, dev = make_queue(mem)
    head = vq.add([(0x100, 16, False), (0x200, 4096, True), (0x300, 1, True)], token=7)
    assert vq.publish()  # device wants kicks: used.flags == 0
    [(got_head, chain)] = dev.pop()
    assert got_head == head
    assert chain == [
        (0x100, 16, DESC_F_NEXT),
        (0x200, 4096, DESC_F_NEXT | DESC_F_WRITE),
        (0x300, 1, DESC_F_WRITE),
    ]
    dev.push(head, 4097)
    assert vq.harvest() == [(7, 4097)]
    assert vq.in_flight == 0 and vq.num_free == 8


def test_free_list_exhaustion_and_reuse(mem: DriverMemory) -> None:
    vq, dev = make_queue(mem, size=8)
    seg = [(0x1000, 16, False), (0x2000, 512, True), (0x3000, 1, True)]
    h1 = vq.add(seg, token=1)
    h2 = vq.add(seg, token=2)
    assert vq.num_free == 2
    with pytest.raises(QueueFull):
        vq.add(seg, token=3)
    assert vq.num_free == 2  # a refused add takes nothing
    vq.publish()
    popped = dev.pop()
    assert {h for h, _ in popped} == {h1, h2}
    dev.push(h2, 1)  # out of order
    assert vq.harvest() == [(2, 1)]
    assert vq.num_free == 5
    h3 = vq.add(seg, token=3)
    vq.publish()
    [(h, _)] = dev.pop()
    assert h == h3
    dev.push(h1, 1, publish=False)
    dev.push(h3, 1)
    assert vq.harvest() == [(1, 1), (3, 1)]
    assert vq.num_free == 8


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.integers(0, 4)), min_size=1, max_size=60))
def test_free_list_never_hands_out_a_descriptor_twice(ops: list[tuple[int, int]]) -> None:
    m = DriverMemory([1 << 20])
    try:
        vq, dev = make_queue(m, size=16, start_index=0xFFF0)
        outstanding: list[int] = []
        token = 0
        for nsegs, completions in ops:
            if vq.num_free >= nsegs:
                vq.add([(0x10 * i, 8, i > 0) for i in range(nsegs)], token)
                token += 1
                vq.publish()
                outstanding += [h for h, _ in dev.pop()]
            for _ in range(min(completions, len(outstanding))):
                dev.push(outstanding.pop(0), 0)
            vq.harvest()
            in_use = [d for c in vq._chains if c for d in c]
            assert len(in_use) == len(set(in_use))
            assert sorted(in_use + vq._free) == list(range(16))
    finally:
        m.close()


# --------------------------------------------------------------------------- wrap-around


def test_indices_wrap_at_16_bits(mem: DriverMemory) -> None:
    vq, dev = make_queue(mem, size=4, start_index=0xFFFE)
    seen_avail = []
    for token in range(6):
        vq.add([(0x40, 8, True)], token)
        vq.publish()
        seen_avail.append(vq.avail_idx)
        [(head, _)] = dev.pop()
        dev.push(head, token)
        assert vq.harvest() == [(token, token)]
    assert seen_avail == [0xFFFF, 0, 1, 2, 3, 4]
    assert vq.last_used == 4


def test_batch_straddling_the_wrap(mem: DriverMemory) -> None:
    vq, dev = make_queue(mem, size=8, start_index=0xFFFD)
    heads = [vq.add([(0x80, 8, True)], t) for t in range(6)]
    assert vq.publish()
    assert vq.avail_idx == 3
    assert [h for h, _ in dev.pop()] == heads
    for h in heads:
        dev.push(h, 0, publish=False)
    dev.publish()
    assert [t for t, _ in vq.harvest()] == list(range(6))


# --------------------------------------------------------------------------- device mistakes


def test_used_index_jump_is_refused(mem: DriverMemory) -> None:
    vq, dev = make_queue(mem)
    head = vq.add([(0x80, 8, True)], 0)
    vq.publish()
    dev.push(head, 0, publish=False)
    dev.push(head, 0)
    with pytest.raises(DeviceUsedIndexJumped):
        vq.harvest()


def test_unknown_head_is_refused(mem: DriverMemory) -> None:
    vq, dev = make_queue(mem)
    vq.add([(0x80, 8, True)], 0)
    vq.publish()
    dev.push(5, 0)  # never handed out
    with pytest.raises(DeviceUsedUnknownHead):
        vq.harvest()


# --------------------------------------------------------------------------- indirect, notify


def test_indirect_chain_uses_one_descriptor(mem: DriverMemory) -> None:
    vq, dev = make_queue(mem, size=4, indirect_max=8)
    segs = [(0x100, 16, False), (0x200, 512, True), (0x300, 512, True), (0x400, 1, True)]
    assert vq.descriptors_needed(4) == 1
    assert vq.descriptors_needed(9) == 9  # too long for the table: direct chain
    head = vq.add(segs, 1)
    assert vq.num_free == 3
    vq.publish()
    addr, length, flags, _ = dev.desc(dev.lay.desc, head)
    assert flags == DESC_F_INDIRECT and length == 16 * 4
    assert addr % 16 == 0 and mem.offset(addr, length) > 0  # a table in guest memory
    [(_, chain)] = dev.pop()
    assert [(a, ln) for a, ln, _ in chain] == [(a, ln) for a, ln, _ in segs]
    assert [f & DESC_F_WRITE for _, _, f in chain] == [0, DESC_F_WRITE, DESC_F_WRITE, DESC_F_WRITE]
    assert vq.add([(0x500, 8, True)], 2) != head  # single buffers stay direct


def test_kick_suppression_without_event_idx(mem: DriverMemory) -> None:
    vq, dev = make_queue(mem)
    vq.add([(0x80, 8, True)], 0)
    assert vq.publish()
    mem.write(dev.lay.used, USED_F_NO_NOTIFY.to_bytes(2, "little"))
    vq.add([(0x80, 8, True)], 1)
    assert not vq.publish()
    assert not vq.publish()  # nothing new: never a kick


def test_kick_and_interrupt_with_event_idx(mem: DriverMemory) -> None:
    vq, dev = make_queue(mem, event_idx=True, start_index=0xFFFF)
    vq.add([(0x80, 8, True)], 0)
    assert vq.publish()  # avail_event starts at the start index
    dev.set_avail_event(0x0005)  # device: "kick me when idx passes 5"
    vq.add([(0x80, 8, True)], 1)
    assert not vq.publish()  # 0 -> 1 does not cross 5
    for t in range(2, 7):
        vq.add([(0x80, 8, True)], t)
    assert vq.publish()  # 1 -> 6 crosses 5
    heads = [h for h, _ in dev.pop()]
    assert not vq.arm()  # nothing used yet
    assert dev.used_event() == 0xFFFF  # interrupt me at the first completion
    dev.push(heads[0], 0)
    assert vq.arm()  # a completion is already there: do not sleep
    assert len(vq.harvest()) == 1
    vq.arm()
    assert dev.used_event() == 0


# --------------------------------------------------------------------------- virtio-blk


def test_blk_config_parse_uses_spec_offsets() -> None:
    raw = bytearray(60)
    struct.pack_into("<Q", raw, 0, 32768)  # capacity
    struct.pack_into("<I", raw, 12, 126)  # seg_max
    struct.pack_into("<HBB", raw, 16, 1024, 16, 63)  # geometry
    struct.pack_into("<I", raw, 20, 4096)  # blk_size
    struct.pack_into("<BBHI", raw, 24, 3, 0, 8, 64)  # topology
    raw[32] = 1  # writeback
    struct.pack_into("<H", raw, 34, 4)  # num_queues
    struct.pack_into("<III", raw, 36, 32768, 1, 8)  # discard limits
    struct.pack_into("<II", raw, 48, 65536, 2)  # write-zeroes limits
    raw[56] = 1  # write_zeroes_may_unmap
    cfg = BlkConfig.parse(bytes(raw))
    assert (cfg.capacity, cfg.seg_max, cfg.blk_size) == (32768, 126, 4096)
    assert (cfg.cylinders, cfg.heads, cfg.sectors) == (1024, 16, 63)
    assert (cfg.physical_block_exp, cfg.min_io_size, cfg.opt_io_size) == (3, 8, 64)
    assert (cfg.writeback, cfg.num_queues) == (1, 4)
    assert (cfg.max_discard_sectors, cfg.max_discard_seg, cfg.discard_sector_alignment) == (
        32768,
        1,
        8,
    )
    assert (cfg.max_write_zeroes_sectors, cfg.max_write_zeroes_seg) == (65536, 2)
    assert cfg.write_zeroes_may_unmap == 1
    assert BlkConfig.parse(bytes(raw[:8])).capacity == 32768  # short configs pad with zeros


def _blk_queue(mem: DriverMemory, size: int = 16, depth: int = 4) -> tuple[BlkQueue, FakeDevice]:
    vq, dev = make_queue(mem, size=size)
    return BlkQueue(0, vq, depth=depth, max_io=8192, timeout=1.0), dev


def test_blk_request_chains(mem: DriverMemory) -> None:
    q, dev = _blk_queue(mem)
    try:
        q.submit(BlkRequest.write(40, b"\x11" * 1024, split=2))
        q.submit(BlkRequest.read(8, 512))
        q.submit(BlkRequest.write_zeroes(64, 8, unmap=True))
        q.submit(BlkRequest.flush())
        with pytest.raises(QueueFull):
            q.submit(BlkRequest.flush())  # depth 4
        q.kick()
        assert q.kicks == 1
        assert os.eventfd_read(q.kick_fd) == 1
        popped = dev.pop()
        shapes = [[(ln, f & DESC_F_WRITE) for _, ln, f in chain] for _, chain in popped]
        assert shapes == [
            [(16, 0), (512, 0), (512, 0), (1, DESC_F_WRITE)],
            [(16, 0), (512, DESC_F_WRITE), (1, DESC_F_WRITE)],
            [(16, 0), (16, 0), (1, DESC_F_WRITE)],
            [(16, 0), (1, DESC_F_WRITE)],
        ]
        hdr = popped[0][1][0][0]
        assert struct.unpack("<IIQ", mem.read(hdr, 16)) == (BlkType.OUT, 0, 40)
        assert mem.read(popped[0][1][1][0], 512) == b"\x11" * 512
        seg = popped[2][1][1][0]
        assert struct.unpack("<QII", mem.read(seg, 16)) == (64, 8, 1)
        # Device: fill the read buffer, set statuses, complete in reverse order.
        data_gpa = popped[1][1][1][0]
        mem.write(data_gpa, b"\x22" * 512)
        for i, (head, chain) in enumerate(reversed(popped)):
            mem.write(chain[-1][0], bytes([i % 2]))
            dev.push(head, 1)
        results = dict(q.reap_full())
        assert results[1].data == b"\x22" * 512
        assert sorted(r.status for r in results.values()) == [0, 0, 1, 1]
        assert q.free_slots == 4
    finally:
        q.close()


def test_blk_fast_path_reuses_slot_buffers(mem: DriverMemory) -> None:
    q, dev = _blk_queue(mem, depth=2)
    try:
        q.slot_buffer(1)[:4] = b"abcd"
        slot = q.submit_io(True, 128, 4096)
        q.kick()
        [(head, chain)] = dev.pop()
        assert mem.read(chain[1][0], 4) == (b"abcd" if slot == 1 else bytes(4))
        mem.write(chain[2][0], b"\x00")
        dev.push(head, 1)
        assert q.wait(timeout=0.1) == [(slot, 0)]
        assert q.free_slots == 2
    finally:
        q.close()


@pytest.mark.parametrize("blocking", [False, True])
def test_eventfd_blocking_mode(mem: DriverMemory, blocking: bool) -> None:
    vq, _ = make_queue(mem)
    q = BlkQueue(0, vq, depth=1, max_io=4096, timeout=1.0, blocking_eventfds=blocking)
    try:
        assert os.get_blocking(q.kick_fd) is blocking
        assert os.get_blocking(q.call_fd) is blocking
    finally:
        q.close()
    assert q.kick_fd == q.call_fd == -1
