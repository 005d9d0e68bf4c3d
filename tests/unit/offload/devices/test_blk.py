"""virtio-blk: every request type, every error path, config and resize."""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence

import pytest

from offload.devices.blk import (
    CONFIG,
    DRAIN_BUDGET,
    RERUN_DELAY_S,
    S_IOERR,
    S_OK,
    S_UNSUPP,
    T_DISCARD,
    T_FLUSH,
    T_GET_ID,
    T_IN,
    T_OUT,
    T_WRITE_ZEROES,
    BlkDevice,
)
from offload.errors import StorageError
from offload.storage.qos import QosLimiter
from offload.storage.volume import SparseFileVolume
from offload.virtio import features as vf
from offload.virtio.chain import F_NEXT
from offload.virtio.queue import SplitQueue
from tests.unit.offload.blkreq import STATUS_UNSET, add_request, make_device, make_volume, segments
from tests.unit.offload.ringbuilder import DriverRing, GuestRam

VOL_SIZE = 1 << 20


@pytest.fixture
def ram() -> Iterator[GuestRam]:
    r = GuestRam(region_size=512 * 1024)
    yield r
    assert r.canaries_intact()
    r.close()


@pytest.fixture
def vol() -> Iterator[SparseFileVolume]:
    v, path = make_volume(VOL_SIZE)
    yield v
    v.close()
    os.unlink(path)


@pytest.fixture
def ring(ram: GuestRam) -> DriverRing:
    return DriverRing(ram, size=16)


@pytest.fixture
def dev(vol: SparseFileVolume) -> BlkDevice:
    return make_device(vol)


def run(dev: BlkDevice, ring: DriverRing) -> bool:
    notify = dev.process_queue(0, ring.device_queue())
    assert not dev.needs_reset
    return notify


def test_write_then_read_roundtrip(dev: BlkDevice, ring: DriverRing, vol: SparseFileVolume) -> None:
    payload = os.urandom(4096)
    w = add_request(ring, T_OUT, 8, data_out=payload)
    assert run(dev, ring)
    assert w.status(ring) == S_OK
    assert os.pread(vol.fd, 4096, 8 * 512) == payload
    r = add_request(ring, T_IN, 8, data_in_len=4096)
    run(dev, ring)
    assert r.status(ring) == S_OK and r.data_in(ring) == payload
    used = ring.take_used()
    assert used == [(w.head, 1), (r.head, 4097)]
    stats = dev.stats()
    assert stats.requests["out"] == 1 and stats.requests["in"] == 1
    assert stats.read_bytes == stats.write_bytes == 4096


@pytest.mark.parametrize("indirect", [False, True])
@pytest.mark.parametrize("split_header", [False, True])
def test_layout_variants(
    dev: BlkDevice, ring: DriverRing, vol: SparseFileVolume, indirect: bool, split_header: bool
) -> None:
    os.pwrite(vol.fd, b"Z" * 512, 0)
    r = add_request(ring, T_IN, 0, data_in_len=512, indirect=indirect, split_header=split_header)
    run(dev, ring)
    assert r.status(ring) == S_OK and r.data_in(ring) == b"Z" * 512


def test_status_sharing_a_buffer_with_data(
    dev: BlkDevice, ring: DriverRing, vol: SparseFileVolume
) -> None:
    os.pwrite(vol.fd, b"Q" * 512, 512)
    hdr = ring.alloc(16, struct.pack("<IIQ", T_IN, 0, 1))
    buf = ring.alloc(513)
    ring.set_desc(0, hdr, 16, F_NEXT, 1)
    ring.set_desc(1, buf, 513, 2, 0)
    ring.publish(0)
    run(dev, ring)
    got = ring.ram.read(buf, 513)
    assert got[:512] == b"Q" * 512 and got[512] == S_OK


def test_batch_is_pushed_and_notified_once(dev: BlkDevice, ring: DriverRing) -> None:
    reqs = [add_request(ring, T_FLUSH, publish=False) for _ in range(5)]
    ring.publish(*(r.head for r in reqs))
    assert run(dev, ring)
    assert [h for h, _ in ring.take_used()] == [r.head for r in reqs]
    assert all(r.status(ring) == S_OK for r in reqs)
    assert not dev.process_queue(0, ring.device_queue())  # nothing new: no interrupt


def test_flush_and_get_id(dev: BlkDevice, ring: DriverRing) -> None:
    f = add_request(ring, T_FLUSH)
    g = add_request(ring, T_GET_ID, data_in_len=20)
    short = add_request(ring, T_GET_ID, data_in_len=4)
    run(dev, ring)
    assert f.status(ring) == S_OK
    assert g.status(ring) == S_OK and g.data_in(ring) == b"vol-1234".ljust(20, b"\0")
    assert short.status(ring) == S_OK and short.data_in(ring) == b"vol-"
    assert ring.take_used()[1:] == [(g.head, 21), (short.head, 5)]


@pytest.mark.parametrize(
    ("rtype", "sector", "kwargs"),
    [
        (T_IN, VOL_SIZE // 512, {"data_in_len": 512}),  # past the end
        (T_IN, VOL_SIZE // 512 - 1, {"data_in_len": 1024}),  # runs over the end
        (T_OUT, (1 << 64) - 1, {"data_out": b"x" * 512}),  # sector * 512 overflows u64
        (T_IN, 0, {"data_in_len": 100}),  # not a whole sector
        (T_IN, 0, {"data_in_len": 512, "data_out": b"extra"}),  # wrong direction
        (T_OUT, 0, {"data_in_len": 512, "data_out": b"x" * 512}),  # wrong direction
    ],
)
def test_bad_data_requests_fail_with_ioerr(
    dev: BlkDevice, ring: DriverRing, rtype: int, sector: int, kwargs: dict[str, object]
) -> None:
    r = add_request(ring, rtype, sector, **kwargs)  # type: ignore[arg-type]
    run(dev, ring)
    assert r.status(ring) == S_IOERR
    assert sum(dev.stats().errors.values()) == 1


def test_unknown_type_is_unsupp(dev: BlkDevice, ring: DriverRing) -> None:
    r = add_request(ring, 99)
    run(dev, ring)
    assert r.status(ring) == S_UNSUPP
    assert dev.stats().errors["unsupported"] == 1


def test_short_header_gets_ioerr(dev: BlkDevice, ring: DriverRing) -> None:
    hdr = ring.alloc(8, b"\0" * 8)
    st = ring.alloc(1, bytes([STATUS_UNSET]))
    ring.set_desc(0, hdr, 8, F_NEXT, 1)
    ring.set_desc(1, st, 1, 2, 0)
    ring.publish(0)
    run(dev, ring)
    assert ring.ram.read(st, 1)[0] == S_IOERR
    assert dev.stats().errors["header"] == 1


def test_missing_status_is_returned_with_len_zero(dev: BlkDevice, ring: DriverRing) -> None:
    r = add_request(ring, T_FLUSH, status=False)
    run(dev, ring)
    assert ring.take_used() == [(r.head, 0)]
    assert dev.stats().errors["no_status"] == 1


def test_read_only_volume_refuses_writes() -> None:
    vol, path = make_volume(VOL_SIZE, read_only=False)
    vol.close()
    ro = SparseFileVolume(path, read_only=True)
    ram = GuestRam(region_size=256 * 1024)
    try:
        ring = DriverRing(ram, size=16)
        dev = make_device(ro)
        assert vf.has(dev.features(), vf.BLK_RO)
        reqs = [
            add_request(ring, T_OUT, 0, data_out=b"w" * 512),
            add_request(ring, T_DISCARD, data_out=segments((0, 1, 0))),
            add_request(ring, T_WRITE_ZEROES, data_out=segments((0, 1, 0))),
            add_request(ring, T_IN, 0, data_in_len=512),
        ]
        dev.process_queue(0, ring.device_queue())
        assert [r.status(ring) for r in reqs] == [S_IOERR, S_IOERR, S_IOERR, S_OK]
        assert dev.stats().errors["read_only"] == 3
    finally:
        ro.close()
        ram.close()
        os.unlink(path)


def test_discard_and_write_zeroes(dev: BlkDevice, ring: DriverRing, vol: SparseFileVolume) -> None:
    os.pwrite(vol.fd, b"D" * 8192, 0)
    d = add_request(ring, T_DISCARD, data_out=segments((0, 4, 0), (8, 2, 0)))
    z = add_request(ring, T_WRITE_ZEROES, data_out=segments((12, 2, 0)))
    u = add_request(ring, T_WRITE_ZEROES, data_out=segments((14, 2, 1)))
    run(dev, ring)
    assert [d.status(ring), z.status(ring), u.status(ring)] == [S_OK] * 3
    data = os.pread(vol.fd, 8192, 0)
    assert data[: 4 * 512] == bytes(2048)
    assert data[4 * 512 : 8 * 512] == b"D" * 2048
    assert data[8 * 512 : 10 * 512] == bytes(1024)
    assert data[10 * 512 : 12 * 512] == b"D" * 1024
    assert data[12 * 512 :] == bytes(2048)


@pytest.mark.parametrize(
    ("rtype", "payload", "status"),
    [
        (T_DISCARD, segments((0, 1, 1)), S_UNSUPP),  # unmap flag on discard
        (T_WRITE_ZEROES, segments((0, 1, 2)), S_UNSUPP),  # unknown flag
        (T_DISCARD, b"\0" * 15, S_IOERR),  # not a whole segment
        (T_DISCARD, b"", S_IOERR),  # no segment
        (T_DISCARD, segments(*[(0, 1, 0)] * 33), S_IOERR),  # too many segments
        (T_WRITE_ZEROES, segments((0, (1 << 22) + 1, 0)), S_IOERR),  # too many sectors
        (T_DISCARD, segments((VOL_SIZE // 512, 1, 0)), S_IOERR),  # out of range
    ],
)
def test_bad_discard_requests(
    dev: BlkDevice, ring: DriverRing, rtype: int, payload: bytes, status: int
) -> None:
    r = add_request(ring, rtype, data_out=payload)
    run(dev, ring)
    assert r.status(ring) == status


def test_discard_not_negotiated_is_unsupp(vol: SparseFileVolume, ring: DriverRing) -> None:
    dev = BlkDevice(vol)
    dev.ack_features(dev.features() & ~vf.bit(vf.BLK_DISCARD))
    r = add_request(ring, T_DISCARD, data_out=segments((0, 1, 0)))
    dev.process_queue(0, ring.device_queue())
    assert r.status(ring) == S_UNSUPP


def test_config_space_layout(dev: BlkDevice) -> None:
    raw = dev.get_config(0, CONFIG.size)
    fields = CONFIG.unpack(raw)
    assert fields[0] == VOL_SIZE // 512  # capacity
    assert fields[2] == 254  # seg_max = queue size - 2
    assert struct.unpack_from("<I", raw, 20)[0] == 512  # blk_size
    assert raw[32] == 1  # writeback
    assert struct.unpack_from("<H", raw, 34)[0] == 1  # num_queues
    assert raw[56] == 1  # write_zeroes_may_unmap
    assert dev.get_config(8, 4) == raw[8:12]
    assert dev.get_config(70, 8) == raw[70:72] + bytes(6)  # zero-padded past the struct


def test_features_offer_transport_and_blk_bits(dev: BlkDevice) -> None:
    f = dev.features()
    for b in (vf.VERSION_1, vf.RING_INDIRECT_DESC, vf.RING_EVENT_IDX, vf.BLK_FLUSH, vf.BLK_MQ):
        assert vf.has(f, b)
    assert not vf.has(f, vf.BLK_RO)
    dev.ack_features(f | vf.bit(vf.RING_PACKED))  # unknown bits are dropped
    assert not vf.has(dev.acked_features, vf.RING_PACKED)


def test_writeback_toggle_through_config(dev: BlkDevice, vol: SparseFileVolume) -> None:
    dev.set_config(32, b"\0")
    assert dev.get_config(32, 1) == b"\0"
    dev.set_config(30, b"\0\0\1")
    assert dev.writeback
    dev.ack_features(dev.features() & ~vf.bit(vf.BLK_CONFIG_WCE))
    dev.set_config(32, b"\0")
    assert dev.writeback  # not writable without CONFIG_WCE
    dev.ack_features(dev.features() & ~vf.bit(vf.BLK_FLUSH))
    assert not dev.writeback  # no FLUSH: write-through


def test_resize_updates_capacity_and_fires_hook(dev: BlkDevice) -> None:
    fired: list[int] = []
    dev.set_config_changed(lambda: fired.append(dev.capacity))
    dev.resize(2 * VOL_SIZE)
    assert fired == [2 * VOL_SIZE // 512]
    assert CONFIG.unpack(dev.get_config(0, CONFIG.size))[0] == 2 * VOL_SIZE // 512


def test_avail_jump_marks_needs_reset(dev: BlkDevice, ring: DriverRing) -> None:
    ring.set_avail_idx(100)
    assert not dev.process_queue(0, ring.device_queue())
    assert dev.needs_reset and "avail" in dev.needs_reset_reason
    assert not dev.process_queue(0, ring.device_queue())  # stays stopped
    dev.reset()
    assert not dev.needs_reset


def test_malformed_chain_completes_with_len_zero(dev: BlkDevice, ring: DriverRing) -> None:
    a = ring.alloc(16)
    ring.set_desc(0, a, 16, F_NEXT, 0)  # self loop
    ring.next_desc = 1
    ring.publish(0)
    ok = add_request(ring, T_FLUSH)
    run(dev, ring)
    assert ring.take_used() == [(0, 0), (ok.head, 1)]
    assert dev.stats().errors["chain"] == 1


def test_event_idx_rearms_avail_event(vol: SparseFileVolume, ram: GuestRam) -> None:
    ring = DriverRing(ram, size=8, event_idx=True)
    dev = make_device(vol)
    add_request(ring, T_FLUSH)
    add_request(ring, T_FLUSH)
    assert dev.process_queue(0, ring.device_queue())
    assert ring.avail_event() == 2


def test_qos_throttles_and_reports_delay(vol: SparseFileVolume, ring: DriverRing) -> None:
    now = [0.0]
    qos = QosLimiter(iops=2, clock=lambda: now[0])
    dev = make_device(vol, qos=qos)
    reqs = [add_request(ring, T_FLUSH, publish=False) for _ in range(4)]
    ring.publish(*(r.head for r in reqs))
    q = ring.device_queue()
    dev.process_queue(0, q)
    assert [r.status(ring) for r in reqs] == [S_OK, S_OK, STATUS_UNSET, STATUS_UNSET]
    assert dev.qos_delay() > 0
    now[0] += 1.0
    assert dev.qos_delay() == 0
    dev.process_queue(0, q)
    assert all(r.status(ring) == S_OK for r in reqs)


def test_multi_queue_stats_are_per_queue(vol: SparseFileVolume, ram: GuestRam) -> None:
    dev = make_device(vol, num_queues=2)
    ring = DriverRing(ram, size=8)
    add_request(ring, T_FLUSH)
    dev.process_queue(1, ring.device_queue())
    assert dev._queue_stats[1].requests["flush"] == 1
    assert dev._queue_stats[0].requests["flush"] == 0
    assert dev.stats().requests["flush"] == 1
    assert struct.unpack_from("<H", dev.get_config(34, 2))[0] == 2


class FailingVolume(SparseFileVolume):
    """A volume whose every data operation fails like a dead disk."""

    def preadv(self, views: Sequence[memoryview], offset: int) -> int:
        raise StorageError("EIO")

    def pwritev(self, views: Sequence[memoryview], offset: int) -> int:
        raise StorageError("EIO")

    def flush(self) -> None:
        raise StorageError("EIO")


def test_volume_errors_complete_with_ioerr(ram: GuestRam, vol: SparseFileVolume) -> None:
    failing = FailingVolume(vol.path)
    try:
        dev = make_device(failing)
        ring = DriverRing(ram, size=16)
        reqs = [
            add_request(ring, T_IN, 0, data_in_len=512),
            add_request(ring, T_OUT, 0, data_out=b"x" * 512),
            add_request(ring, T_FLUSH),
        ]
        dev.process_queue(0, ring.device_queue())
        assert [r.status(ring) for r in reqs] == [S_IOERR] * 3
        assert dev.stats().errors["io"] == 3 and not dev.needs_reset
    finally:
        failing.close()


def test_long_drains_push_in_bounded_batches(dev: BlkDevice, ram: GuestRam) -> None:
    ring = DriverRing(ram, size=4)
    q = ring.device_queue()
    reqs = [add_request(ring, T_FLUSH, publish=False) for _ in range(2)]
    heads = [r.head for r in reqs] * 2
    pushes: list[int] = []
    original = q.push_many

    def spy(completions: Iterable[tuple[int, int]]) -> None:
        batch = list(completions)
        pushes.append(len(batch))
        original(batch)
        if len(pushes) == 1:
            ring.publish(*heads)  # the driver refills while the device drains

    q.push_many = spy  # type: ignore[method-assign]
    ring.publish(*heads)
    dev.process_queue(0, q)
    assert pushes == [4, 4]
    assert len(ring.take_used()) == 8


def test_ring_memory_vanishing_marks_needs_reset(dev: BlkDevice, ring: DriverRing) -> None:
    add_request(ring, T_FLUSH)
    ring.ram.mem.remove_region(ring.ram.regions[0])
    assert not dev.process_queue(0, ring.device_queue())
    assert dev.needs_reset and dev.stats().errors["ring"] == 1


def test_queues_run_concurrently_with_memory_table_changes(
    vol: SparseFileVolume, ram: GuestRam
) -> None:
    """Two queue threads serve I/O while the protocol thread swaps region B in and out."""
    dev = make_device(vol, num_queues=2)
    half = ram.base_gpa + ram.region_size // 2
    rings = [
        DriverRing(ram, size=16, data_limit=half),
        DriverRing(ram, size=16, base_gpa=half, data_limit=ram.base_gpa + ram.region_size),
    ]
    payloads = [bytes([0x11]) * 512, bytes([0x22]) * 512]
    os.pwrite(vol.fd, payloads[0], 0)
    os.pwrite(vol.fd, payloads[1], 512)
    failures: list[BaseException] = []
    swapping = threading.Event()

    def serve(index: int) -> None:
        ring = rings[index]
        swapping.wait()
        try:
            for _ in range(150):
                saved = (ring.next_data, ring.next_desc)
                reqs = [add_request(ring, T_IN, index, data_in_len=512) for _ in range(4)]
                dev.process_queue(index, ring.device_queue())
                for r in reqs:
                    assert r.status(ring) == S_OK and r.data_in(ring) == payloads[index]
                assert len(ring.take_used()) == 4
                ring.next_data, ring.next_desc = saved
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=serve, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    swaps = 0
    while any(t.is_alive() for t in threads):
        ram.mem.remove_region(ram.regions[1])
        ram.mem.add_region(ram.regions[1], ram.fd)
        swaps += 1
        swapping.set()
    for t in threads:
        t.join()
    assert failures == [] and swaps > 0
    assert not dev.needs_reset
    assert dev.stats().requests["in"] == 2 * 150 * 4


def test_completions_are_pushed_and_signalled_while_draining(
    vol: SparseFileVolume, ram: GuestRam
) -> None:
    ring = DriverRing(ram, size=8, event_idx=True)
    dev = make_device(vol, completion_batch=2)
    reqs = [add_request(ring, T_FLUSH, publish=False) for _ in range(5)]
    ring.publish(*(r.head for r in reqs))
    q = ring.device_queue()
    seen: list[tuple[int, int | None]] = []  # (used.idx, status of request 2) at each signal
    q.notifier = lambda: seen.append((ring.used_idx(), reqs[2].status(ring)))
    assert not dev.process_queue(0, q)  # the driver got its interrupt mid-drain
    assert seen == [(2, STATUS_UNSET)]  # after the first batch, before request 2 ran
    assert [h for h, _ in ring.take_used()] == [r.head for r in reqs]
    assert ring.avail_event() == 5


def test_no_notify_is_set_while_draining_and_cleared_after(
    vol: SparseFileVolume, ring: DriverRing
) -> None:
    dev = make_device(vol, completion_batch=1)
    reqs = [add_request(ring, T_FLUSH, publish=False) for _ in range(2)]
    ring.publish(*(r.head for r in reqs))
    q = ring.device_queue()
    flags: list[int] = []
    q.notifier = lambda: flags.append(struct.unpack("<H", ring.ram.read(ring.used_gpa, 2))[0])
    dev.process_queue(0, q)
    assert flags == [1, 1]  # one signal per pushed batch, NO_NOTIFY set during each
    assert struct.unpack("<H", ring.ram.read(ring.used_gpa, 2))[0] == 0


def test_completion_batch_must_be_positive(vol: SparseFileVolume) -> None:
    with pytest.raises(ValueError, match="completion batch"):
        BlkDevice(vol, completion_batch=0)


def test_rings_on_top_of_each_other_mark_needs_reset(dev: BlkDevice, ram: GuestRam) -> None:
    # Found by the fuzzer (fuzz/corpus/blk/crash-used-ring-over-avail-ring): all
    # three areas at one address, last_avail one behind avail.idx.  Publishing
    # used.idx rewrote avail.idx, so process_queue never returned.
    base = ram.base_gpa
    q = SplitQueue(ram.mem, size=2, desc_gpa=base, avail_gpa=base, used_gpa=base, event_idx=True)
    q.last_avail_idx = 0xFFFF
    assert not dev.process_queue(0, q)
    assert dev.needs_reset
    assert dev.stats().errors["ring"] == 1


def test_a_drain_that_feeds_itself_stops_at_the_budget(ram: GuestRam) -> None:
    # One chain: IN of sector k into a 512-byte buffer that covers the avail
    # ring and the request's own header.  Sector k holds avail.idx = k + 2 and
    # "IN sector k + 1", so every read announces the next request, forever.
    sectors = 65536
    vol, path = make_volume(sectors * 512)
    try:
        for k in range(sectors):
            blob = bytearray(32)
            struct.pack_into("<H", blob, 2, (k + 2) & 0xFFFF)
            struct.pack_into("<IIQ", blob, 16, T_IN, 0, (k + 1) % sectors)
            os.pwrite(vol.fd, blob, k * 512)
        dev = make_device(vol, queue_size=4)
        base = ram.base_gpa
        desc, avail, used, status = base, base + 0x1000, base + 0x400, base + 0x800
        d = struct.Struct("<QIHH")
        ram.write(
            desc, d.pack(avail + 16, 16, 1, 1) + d.pack(avail, 512, 3, 2) + d.pack(status, 1, 2, 0)
        )
        ram.write(avail, struct.pack("<HH", 0, 1) + bytes(12) + struct.pack("<IIQ", T_IN, 0, 0))
        q = SplitQueue(
            ram.mem, size=4, desc_gpa=desc, avail_gpa=avail, used_gpa=used, event_idx=False
        )
        dev.process_queue(0, q)
        assert dev.stats().requests["in"] == DRAIN_BUDGET
        assert not dev.needs_reset
        assert dev.queue_timeout(0) == RERUN_DELAY_S  # the worker runs it again, no kick needed
        q2 = SplitQueue(
            ram.mem, size=4, desc_gpa=desc, avail_gpa=avail, used_gpa=used, event_idx=False
        )
        ram.write(avail + 2, struct.pack("<H", 0))  # the driver stops: nothing available
        dev.process_queue(0, q2)
        assert dev.queue_timeout(0) == 0.0
    finally:
        vol.close()
        os.unlink(path)
