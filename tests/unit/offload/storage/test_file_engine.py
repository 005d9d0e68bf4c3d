"""FileEngine: non-blocking fast paths, the completion pool, an injected slow disk."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from offload.errors import StorageError
from offload.storage.file_engine import FileEngine
from offload.storage.volume import SparseFileVolume
from tests.unit.offload.blkreq import make_volume

SIZE = 1 << 20


@pytest.fixture
def volume() -> Iterator[SparseFileVolume]:
    vol, path = make_volume(SIZE)
    yield vol
    vol.close()
    os.unlink(path)


class Done:
    """An IoDone that records its result and can be waited for."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.error: StorageError | None = None
        self.calls = 0

    def __call__(self, error: StorageError | None) -> None:
        self.error = error
        self.calls += 1
        self.event.set()


def test_a_cached_read_completes_inline(volume: SparseFileVolume) -> None:
    os.pwrite(volume.fd, b"abc" * 100, 4096)
    engine = FileEngine(volume, workers=1)
    try:
        buf = bytearray(300)
        assert engine.try_preadv([memoryview(buf)], 4096, 300)
        assert bytes(buf) == b"abc" * 100
    finally:
        engine.close()


def test_a_read_past_the_end_of_the_file_goes_to_the_pool(volume: SparseFileVolume) -> None:
    engine = FileEngine(volume, workers=1)
    try:
        os.ftruncate(volume.fd, 4096)  # the file shrank behind our back
        buf = bytearray(b"\xff" * 8192)
        assert not engine.try_preadv([memoryview(buf)], 0, 8192)
        done = Done()
        engine.aio_preadv([memoryview(buf)], 0, done)
        assert done.event.wait(10)
        assert done.error is None and bytes(buf) == bytes(8192)  # zero-filled, no stale bytes
    finally:
        engine.close()


def test_writes_land_in_the_file_through_either_path(volume: SparseFileVolume) -> None:
    engine = FileEngine(volume, workers=2)
    try:
        inline = engine.try_pwritev([memoryview(b"i" * 512)], 0, 512)
        if not inline:  # the file system refuses RWF_NOWAIT writes: the pool does them
            done = Done()
            engine.aio_pwritev([memoryview(b"i" * 512)], 0, done)
            assert done.event.wait(10) and done.error is None
        done = Done()
        engine.aio_pwritev([memoryview(b"p" * 512)], 512, done)
        assert done.event.wait(10) and done.error is None
        assert os.pread(volume.fd, 1024, 0) == b"i" * 512 + b"p" * 512
    finally:
        engine.close()


def test_a_slow_request_does_not_hold_up_the_next(volume: SparseFileVolume) -> None:
    release = threading.Event()
    started = threading.Event()

    def delay(op: str, offset: int) -> float:
        if offset == 0:
            if threading.current_thread().name.startswith("blk-io"):
                started.set()
                assert release.wait(10)
            return 1e-9
        return 0.0

    engine = FileEngine(volume, workers=2, delay=delay)
    try:
        slow, fast = Done(), Done()
        engine.aio_preadv([memoryview(bytearray(512))], 0, slow)
        assert started.wait(10)
        engine.aio_preadv([memoryview(bytearray(512))], 4096, fast)
        assert fast.event.wait(10)
        assert not slow.event.is_set()  # completed out of order
        release.set()
        assert slow.event.wait(10) and slow.error is None
    finally:
        release.set()
        engine.close()


def test_errors_reach_the_callback_and_close_finishes_queued_work(
    volume: SparseFileVolume,
) -> None:
    engine = FileEngine(volume, workers=1)
    bad, flushed = Done(), Done()
    engine.aio_preadv([memoryview(bytearray(512))], SIZE, bad)  # past the end
    engine.aio_flush(flushed)
    engine.close()
    assert bad.calls == 1 and isinstance(bad.error, StorageError)
    assert flushed.calls == 1 and flushed.error is None
    with pytest.raises(StorageError):
        engine.aio_flush(Done())


def test_workers_must_be_positive(volume: SparseFileVolume) -> None:
    with pytest.raises(ValueError):
        FileEngine(volume, workers=0)


def test_a_file_in_memory_is_served_inline() -> None:
    vol, path = make_volume(SIZE, directory="/dev/shm")
    engine = FileEngine(vol, workers=1)
    try:
        assert engine.in_memory
        assert engine.try_pwritev([memoryview(b"m" * 512)], 512, 512)
        buf = bytearray(512)
        assert engine.try_preadv([memoryview(buf)], 512, 512) and bytes(buf) == b"m" * 512
    finally:
        engine.close()
        os.unlink(path)
