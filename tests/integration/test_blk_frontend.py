"""The driver-side front-end against real vhost-user-blk back-ends.

Every test runs once per back-end (``offload-blk``, ``qemu-storage-daemon``)
with the same front-end (``offload.testing``) and the same expectations,
which are what virtio 1.2 (5.2 Block Device) requires plus what the team
demands of a sparse-file volume (DISCARD reads back as zeros).  Data checks
use an in-memory model of the image: every read is compared with it, and the
image file on the host is compared byte for byte after a FLUSH.
``test_backends_agree`` runs one scripted transcript against both back-ends
and requires identical results.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from offload.testing import (
    BLK_ID_BYTES,
    SECTOR_SIZE,
    BlkFeature,
    BlkQueue,
    BlkRequest,
    BlkStatus,
    BlkType,
    ProtocolFeature,
    RingFeature,
    VhostUserBlkFrontend,
    wait_any,
)
from tools.region.blk_backends import BACKEND_KINDS, BackendKind, BlkBackend

pytestmark = pytest.mark.integration

IMAGE_SIZE = 16 << 20
SECTORS = IMAGE_SIZE // SECTOR_SIZE
SERIAL = "bmaas-itest-0001"
# What GET_ID returns: offload-blk echoes --serial, qsd has a fixed string.
EXPECTED_ID = {"offload-blk": SERIAL.encode(), "qsd": b"vhost_user_blk"}


def _image_bytes(seed: int = 1234) -> bytes:
    return random.Random(seed).randbytes(IMAGE_SIZE)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(_image_bytes())
    return path


@pytest.fixture(params=BACKEND_KINDS)
def kind(request: pytest.FixtureRequest) -> BackendKind:
    value: BackendKind = request.param
    return value


@contextmanager
def serving(
    kind: BackendKind, image: Path, *, read_only: bool = False, queues: int = 1
) -> Iterator[BlkBackend]:
    backend = BlkBackend(kind, image, read_only=read_only, queues=queues, serial=SERIAL)
    backend.start()
    try:
        yield backend
        assert backend.alive(), f"{kind} died: {backend.log_tail()}"
    finally:
        backend.stop()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Model:
    """What the disk must contain."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)

    def write(self, sector: int, payload: bytes) -> None:
        off = sector * SECTOR_SIZE
        self.data[off : off + len(payload)] = payload

    def zero(self, sector: int, nsect: int) -> None:
        off = sector * SECTOR_SIZE
        self.data[off : off + nsect * SECTOR_SIZE] = bytes(nsect * SECTOR_SIZE)

    def read(self, sector: int, length: int) -> bytes:
        off = sector * SECTOR_SIZE
        return bytes(self.data[off : off + length])


def random_io(
    q: BlkQueue,
    model: Model,
    rng: random.Random,
    *,
    count: int,
    lo_sector: int = 0,
    hi_sector: int = SECTORS,
) -> None:
    """Random writes (some scatter-gather) in batches, then reads of every range."""
    writes: list[BlkRequest] = []
    for _ in range(count):
        nsect = rng.choice((1, 8, 8, 8, 16, 64, 128))
        sector = rng.randrange(lo_sector, hi_sector - nsect)
        payload = rng.randbytes(nsect * SECTOR_SIZE)
        writes.append(BlkRequest.write(sector, payload, split=rng.choice((1, 1, 2, 4))))
    # Batches never overlap in flight: apply to the model in submission order
    # only after each batch completed, and keep batches free of overlaps.
    for start in range(0, len(writes), 32):
        batch = _non_overlapping(writes[start : start + 32])
        results = q.run(batch)
        assert [r.status for r in results] == [BlkStatus.OK] * len(batch)
        for req in batch:
            model.write(req.sector, req.data)
    reads = [BlkRequest.read(w.sector, len(w.data), split=w.split) for w in writes]
    reads += [
        BlkRequest.read(s, 4096)
        for s in (rng.randrange(lo_sector, hi_sector - 8) for _ in range(32))
    ]
    for start in range(0, len(reads), 32):
        batch = reads[start : start + 32]
        results = q.run(batch)
        for req, res in zip(batch, results, strict=True):
            assert res.status == BlkStatus.OK, (req, res.status)
            assert _sha(res.data) == _sha(model.read(req.sector, req.length)), req


def _non_overlapping(reqs: list[BlkRequest]) -> list[BlkRequest]:
    kept: list[BlkRequest] = []
    spans: list[tuple[int, int]] = []
    for r in reqs:
        a, b = r.sector, r.sector + len(r.data) // SECTOR_SIZE
        if all(b <= x or a >= y for x, y in spans):
            kept.append(r)
            spans.append((a, b))
    return kept


def assert_clean_teardown(fe: VhostUserBlkFrontend) -> None:
    """GET_VRING_BASE must report exactly the avail index we published."""
    expected = [q.vq.avail_idx for q in fe.queues]
    assert all(q.vq.in_flight == 0 for q in fe.queues)
    assert fe.stop() == expected


# --------------------------------------------------------------------------- per back-end


def test_negotiation_and_config(kind: BackendKind, image: Path) -> None:
    with (
        serving(kind, image, queues=2) as be,
        VhostUserBlkFrontend(be.socket_path, num_queues=2) as fe,
    ):
        assert fe.has(RingFeature.VERSION_1)
        assert fe.has(RingFeature.PROTOCOL_FEATURES)
        for bit in (BlkFeature.FLUSH, BlkFeature.DISCARD, BlkFeature.WRITE_ZEROES, BlkFeature.MQ):
            assert fe.has(bit), f"{kind} does not offer {bit.name}"
        assert not fe.offered(BlkFeature.RO)
        assert not fe.offered(RingFeature.RING_PACKED)  # we never asked for it
        assert fe.protocol_features >> ProtocolFeature.CONFIG & 1
        assert fe.protocol_features >> ProtocolFeature.MQ & 1
        assert fe.max_queues >= 2
        cfg = fe.blk_config
        assert cfg.capacity == SECTORS
        assert cfg.num_queues == 2
        if fe.has(BlkFeature.BLK_SIZE):
            assert cfg.blk_size >= SECTOR_SIZE
            assert cfg.blk_size & (cfg.blk_size - 1) == 0
        if fe.has(BlkFeature.SEG_MAX):
            assert cfg.seg_max >= 1
        assert cfg.max_discard_sectors > 0
        assert cfg.max_discard_seg >= 1
        assert cfg.max_write_zeroes_sectors > 0
        assert cfg.max_write_zeroes_seg >= 1
        assert fe.get_config().capacity == SECTORS  # a second GET_CONFIG agrees
        assert_clean_teardown(fe)


def test_get_id(kind: BackendKind, image: Path) -> None:
    with serving(kind, image) as be, VhostUserBlkFrontend(be.socket_path) as fe:
        res = fe.queues[0].get_id()
        assert res.status == BlkStatus.OK
        assert len(res.data) == BLK_ID_BYTES
        # virtio 1.2 5.2.6: up to 20 bytes, NUL-terminated only when shorter.
        ident = res.data.split(b"\0", 1)[0]
        assert 0 < len(ident) <= BLK_ID_BYTES
        assert ident.isascii()
        assert ident == EXPECTED_ID[kind]
        assert_clean_teardown(fe)


def test_random_writes_then_reads_match_host_file(kind: BackendKind, image: Path) -> None:
    model = Model(image.read_bytes())
    rng = random.Random(7)
    with serving(kind, image) as be, VhostUserBlkFrontend(be.socket_path) as fe:
        q = fe.queues[0]
        random_io(q, model, rng, count=160)
        assert q.flush().status == BlkStatus.OK
        assert _sha(image.read_bytes()) == _sha(bytes(model.data))
        assert_clean_teardown(fe)


def test_indirect_descriptors_and_ring_wraparound(kind: BackendKind, image: Path) -> None:
    """Indices start 40 below 2**16 so both rings wrap; chains go indirect if offered."""
    model = Model(image.read_bytes())
    rng = random.Random(11)
    start = 0x10000 - 40
    with (
        serving(kind, image) as be,
        VhostUserBlkFrontend(be.socket_path, indirect=True, start_index=start, queue_size=64) as fe,
    ):
        if kind == "qsd":
            assert fe.has(RingFeature.INDIRECT_DESC)
        q = fe.queues[0]
        random_io(q, model, rng, count=100)
        assert q.flush().status == BlkStatus.OK
        assert q.vq.avail_idx < start  # wrapped past 65535
        assert _sha(image.read_bytes()) == _sha(bytes(model.data))
        assert_clean_teardown(fe)


def test_event_idx_off(kind: BackendKind, image: Path) -> None:
    """Without EVENT_IDX the flags-based notification path must work too (one region)."""
    model = Model(image.read_bytes())
    with (
        serving(kind, image) as be,
        VhostUserBlkFrontend(be.socket_path, event_idx=False, regions=1) as fe,
    ):
        assert not fe.has(RingFeature.EVENT_IDX)
        assert len(fe.memory.regions) == 1
        random_io(fe.queues[0], model, random.Random(3), count=64)
        assert_clean_teardown(fe)


def test_flush(kind: BackendKind, image: Path) -> None:
    with serving(kind, image) as be, VhostUserBlkFrontend(be.socket_path) as fe:
        q = fe.queues[0]
        assert q.write(100, b"\xab" * 4096).status == BlkStatus.OK
        res = q.flush()
        assert res.status == BlkStatus.OK
        assert res.data == b""
        assert image.read_bytes()[100 * 512 : 100 * 512 + 4096] == b"\xab" * 4096
        assert_clean_teardown(fe)


def test_discard_and_write_zeroes_read_back_zeros(kind: BackendKind, image: Path) -> None:
    model = Model(image.read_bytes())
    base = 2048  # 1 MiB in, 4 KiB aligned
    with serving(kind, image) as be, VhostUserBlkFrontend(be.socket_path) as fe:
        q = fe.queues[0]
        pattern = bytes(range(256)) * (128 * 1024 // 256)  # 256 sectors
        assert q.write(base, pattern).status == BlkStatus.OK
        model.write(base, pattern)
        # WRITE_ZEROES without and with UNMAP, DISCARD on 4 KiB-aligned ranges.
        assert q.write_zeroes(base + 8, 16).status == BlkStatus.OK
        model.zero(base + 8, 16)
        assert q.write_zeroes(base + 64, 24, unmap=True).status == BlkStatus.OK
        model.zero(base + 64, 24)
        assert q.discard(base + 128, 64).status == BlkStatus.OK
        model.zero(base + 128, 64)
        # virtio 1.2 5.2.6.2: DISCARD with the UNMAP flag set is UNSUPP.
        bad = BlkRequest(BlkType.DISCARD, ranges=((base + 200, 8, 1),))
        assert q.execute(bad).status == BlkStatus.UNSUPP
        got = q.read(base, len(pattern))
        assert got.status == BlkStatus.OK
        assert got.data == model.read(base, len(pattern))
        assert got.data[8 * 512 : 24 * 512] == bytes(16 * 512)
        assert got.data[128 * 512 : 192 * 512] == bytes(64 * 512)
        assert q.flush().status == BlkStatus.OK
        assert image.read_bytes() == bytes(model.data)
        assert_clean_teardown(fe)


def test_out_of_range_and_unknown_requests(kind: BackendKind, image: Path) -> None:
    before = image.read_bytes()
    with serving(kind, image) as be, VhostUserBlkFrontend(be.socket_path) as fe:
        q = fe.queues[0]
        assert q.read(SECTORS, 512).status == BlkStatus.IOERR
        assert q.read(SECTORS - 4, 4096).status == BlkStatus.IOERR  # straddles the end
        assert q.read(1 << 40, 512).status == BlkStatus.IOERR
        assert q.write(SECTORS, b"\x55" * 512).status == BlkStatus.IOERR
        assert q.write(SECTORS - 1, b"\x55" * 1024).status == BlkStatus.IOERR
        assert q.write_zeroes(SECTORS - 4, 8).status == BlkStatus.IOERR
        assert q.discard(SECTORS, 8).status == BlkStatus.IOERR
        last = q.read(SECTORS - 1, 512)  # the last sector is still fine
        assert last.status == BlkStatus.OK
        assert last.data == before[-512:]
        assert_clean_teardown(fe)
    after = image.read_bytes()
    assert len(after) == IMAGE_SIZE
    assert after == before


def test_unknown_request_type_is_unsupp(kind: BackendKind, image: Path) -> None:
    with serving(kind, image) as be, VhostUserBlkFrontend(be.socket_path) as fe:
        q = fe.queues[0]
        assert q.execute(BlkRequest(type=0x7E)).status == BlkStatus.UNSUPP
        assert q.execute(BlkRequest(type=0x7F, length=512)).status == BlkStatus.UNSUPP
        assert q.flush().status == BlkStatus.OK  # still serving
        assert_clean_teardown(fe)


def test_read_only_export_refuses_writes(kind: BackendKind, image: Path) -> None:
    before = image.read_bytes()
    with (
        serving(kind, image, read_only=True) as be,
        VhostUserBlkFrontend(be.socket_path) as fe,
    ):
        assert fe.has(BlkFeature.RO)
        q = fe.queues[0]
        res = q.read(64, 8192)
        assert res.status == BlkStatus.OK
        assert res.data == before[64 * 512 : 64 * 512 + 8192]
        assert q.write(64, b"\x01" * 4096).status == BlkStatus.IOERR
        assert q.write_zeroes(64, 8).status == BlkStatus.IOERR
        assert q.discard(64, 8).status == BlkStatus.IOERR
        assert q.get_id().status == BlkStatus.OK
        assert_clean_teardown(fe)
    assert image.read_bytes() == before


def test_two_queues_concurrently(kind: BackendKind, image: Path) -> None:
    model = Model(image.read_bytes())
    half = SECTORS // 2
    errors: list[BaseException] = []
    with (
        serving(kind, image, queues=2) as be,
        VhostUserBlkFrontend(be.socket_path, num_queues=2) as fe,
    ):

        def worker(qi: int) -> None:
            try:
                random_io(
                    fe.queues[qi],
                    model,  # disjoint halves: the shared model is safe
                    random.Random(100 + qi),
                    count=128,
                    lo_sector=qi * half,
                    hi_sector=(qi + 1) * half,
                )
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(qi,)) for qi in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert all(q.vq.avail_idx > 100 for q in fe.queues)
        assert fe.queues[0].flush().status == BlkStatus.OK
        assert _sha(image.read_bytes()) == _sha(bytes(model.data))
        assert_clean_teardown(fe)


def test_sustained_load(kind: BackendKind, image: Path) -> None:
    """Seconds of closed-loop 4 KiB I/O as bench/blk.py drives it.

    QD1 on one queue, first interrupt-driven, then busy-polling used.idx so
    that a torn or transient index written by the device shows up; then QD16
    on two queues polled by one thread.
    """
    nblocks = IMAGE_SIZE // 4096
    rng = random.Random(5)
    done_total = 0
    with (
        serving(kind, image, queues=2) as be,
        VhostUserBlkFrontend(be.socket_path, num_queues=2, depth=16, max_io=4096) as fe,
    ):
        q0 = fe.queues[0]
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            q0.submit_io(rng.random() < 0.5, rng.randrange(nblocks) * 8, 4096)
            q0.kick()
            assert [st for _, st in q0.wait()] == [BlkStatus.OK]
            done_total += 1
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # busy-poll used.idx, no interrupts
            q0.submit_io(False, rng.randrange(nblocks) * 8, 4096)
            q0.kick()
            spin_until = time.monotonic() + 10.0
            while not (got := q0.reap()):
                assert time.monotonic() < spin_until, q0.vq.describe()
            assert [st for _, st in got] == [BlkStatus.OK]
            done_total += 1
        for q in fe.queues:
            for _ in range(16):
                q.submit_io(rng.random() < 0.5, rng.randrange(nblocks) * 8, 4096)
            q.kick()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            done = wait_any(fe.queues, 10.0)
            assert all(status == BlkStatus.OK for _, _, status in done)
            done_total += len(done)
            for q, _, _ in done:
                q.submit_io(rng.random() < 0.5, rng.randrange(nblocks) * 8, 4096)
            for q in {q for q, _, _ in done}:
                q.kick()
        while any(q.vq.in_flight for q in fe.queues):
            assert all(st == BlkStatus.OK for _, _, st in wait_any(fe.queues, 10.0))
        assert done_total > 1000
        assert_clean_teardown(fe)


def test_blocking_eventfds_and_idle_ring_stop(kind: BackendKind, image: Path) -> None:
    """Eventfds without O_NONBLOCK, and GET_VRING_BASE on a ring never kicked.

    The vhost-user spec does not say the front-end's eventfds are
    non-blocking (QEMU's are), so a back-end must not block on them.
    """
    with (
        serving(kind, image, queues=2) as be,
        VhostUserBlkFrontend(be.socket_path, num_queues=2, blocking_eventfds=True, timeout=5) as fe,
    ):
        assert fe.queues[0].write(8, b"\x5a" * 4096).status == BlkStatus.OK
        assert fe.queues[0].read(8, 4096).data == b"\x5a" * 4096
        assert_clean_teardown(fe)  # queue 1 never saw a kick


def test_reconnect_sees_earlier_writes(kind: BackendKind, image: Path) -> None:
    with serving(kind, image) as be:
        with VhostUserBlkFrontend(be.socket_path) as fe:
            assert fe.queues[0].write(512, b"\x42" * 8192).status == BlkStatus.OK
            assert_clean_teardown(fe)
        with VhostUserBlkFrontend(be.socket_path) as fe:
            res = fe.queues[0].read(512, 8192)
            assert res.status == BlkStatus.OK
            assert res.data == b"\x42" * 8192
            assert_clean_teardown(fe)


# --------------------------------------------------------------------------- both at once


def _transcript(kind: BackendKind, image: Path) -> list[object]:
    """A fixed script; returns everything the spec defines about its results."""
    out: list[object] = []
    rng = random.Random(2024)
    with (
        serving(kind, image, queues=2) as be,
        VhostUserBlkFrontend(be.socket_path, num_queues=2, start_index=65500) as fe,
    ):
        cfg = fe.blk_config
        out.append(("capacity", cfg.capacity, "num_queues", cfg.num_queues))
        out.append(("ro", fe.has(BlkFeature.RO), "flush", fe.has(BlkFeature.FLUSH)))
        for qi, q in enumerate(fe.queues):
            base = qi * (SECTORS // 2)
            chunks = rng.sample(range(1, SECTORS // 2 // 64), 48)
            writes = [
                BlkRequest.write(base + c * 64, rng.randbytes(rng.choice((1, 8, 32)) * 512))
                for c in chunks
            ]
            phases: list[list[BlkRequest]] = [
                writes,
                [BlkRequest.flush()],
                [
                    BlkRequest.write_zeroes(base + 16, 8),
                    BlkRequest.discard(base + 64, 64),
                    BlkRequest.read(SECTORS, 512),  # out of range: IOERR
                    BlkRequest(BlkType.DISCARD, ranges=((8, 8, 1),)),  # UNMAP: UNSUPP
                    BlkRequest(type=0x7E),  # unknown: UNSUPP
                ],
                [BlkRequest.read(w.sector, len(w.data)) for w in writes],
                [BlkRequest.read(base, 256 * 512)],
            ]
            for phase in phases:
                out.append([(r.status, _sha(r.data)) for r in q.run(phase)])
        assert fe.queues[0].flush().status == BlkStatus.OK
        out.append(("bases", fe.stop()))
    out.append(("image", _sha(image.read_bytes())))
    return out


def test_backends_agree(tmp_path: Path) -> None:
    transcripts = {}
    for kind in BACKEND_KINDS:
        img = tmp_path / f"{kind}.img"
        img.write_bytes(_image_bytes())
        transcripts[kind] = _transcript(kind, img)
    first, second = (transcripts[k] for k in BACKEND_KINDS)
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a == b
