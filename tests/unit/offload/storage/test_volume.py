"""SparseFileVolume: vectored I/O, discard/zeroes (fallocate and fallback), resize."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from offload.errors import StorageError
from offload.storage import volume as volume_mod
from offload.storage.volume import SparseFileVolume

SIZE = 1 << 20


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "vol.raw"
    with open(p, "wb") as f:
        f.truncate(SIZE)
    return p


@pytest.fixture
def vol(path: Path) -> Iterator[SparseFileVolume]:
    with SparseFileVolume(path) as v:
        yield v


def test_size_comes_from_the_file(vol: SparseFileVolume) -> None:
    assert vol.size == SIZE and not vol.read_only


def test_vectored_roundtrip(vol: SparseFileVolume) -> None:
    a, b = bytearray(b"a" * 100), bytearray(b"b" * 412)
    assert vol.pwritev([memoryview(a), memoryview(b)], 4096) == 512
    x, y = bytearray(300), bytearray(212)
    assert vol.preadv([memoryview(x), memoryview(y)], 4096) == 512
    assert bytes(x + y) == b"a" * 100 + b"b" * 412


def test_more_buffers_than_iov_max(vol: SparseFileVolume, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(volume_mod, "_IOV_MAX", 3)
    bufs = [bytearray(bytes([i]) * 10) for i in range(10)]
    assert vol.pwritev([memoryview(b) for b in bufs], 0) == 100
    out = [bytearray(7) for _ in range(15)]
    assert vol.preadv([memoryview(b) for b in out], 0) == 105
    assert b"".join(out)[:100] == b"".join(bufs)


def test_out_of_range_io_is_refused(vol: SparseFileVolume) -> None:
    with pytest.raises(StorageError):
        vol.preadv([memoryview(bytearray(512))], SIZE - 256)
    with pytest.raises(StorageError):
        vol.pwritev([memoryview(bytearray(1))], -1)
    with pytest.raises(StorageError):
        vol.discard(SIZE, 1)


def test_read_past_a_shrunken_file_zero_fills(vol: SparseFileVolume, path: Path) -> None:
    vol.pwritev([memoryview(bytearray(b"x" * 8192))], SIZE - 8192)
    os.truncate(path, SIZE - 4096)  # someone shrank it behind our back
    buf = bytearray(b"\xff" * 8192)
    vol.preadv([memoryview(buf)], SIZE - 8192)
    assert bytes(buf) == b"x" * 4096 + bytes(4096)


def _fill(vol: SparseFileVolume) -> None:
    vol.pwritev([memoryview(bytearray(b"D" * 65536))], 0)


@pytest.mark.parametrize("unmap", [False, True])
def test_write_zeroes(vol: SparseFileVolume, unmap: bool) -> None:
    _fill(vol)
    vol.write_zeroes(4096, 8192, unmap)
    data = os.pread(vol.fd, 65536, 0)
    assert data[:4096] == b"D" * 4096
    assert data[4096:12288] == bytes(8192)
    assert data[12288:] == b"D" * (65536 - 12288)
    assert vol.size == SIZE


def test_discard_reads_back_zeros_and_frees_blocks(vol: SparseFileVolume, path: Path) -> None:
    _fill(vol)
    before = os.stat(path).st_blocks
    vol.discard(0, 65536)
    assert os.pread(vol.fd, 65536, 0) == bytes(65536)
    assert os.stat(path).st_blocks < before


def test_fallback_writes_zeros_when_fallocate_is_refused(
    vol: SparseFileVolume, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    def refuse(fd: int, mode: int, offset: int, length: int) -> int:
        ctypes.set_errno(errno.EOPNOTSUPP)
        return -1

    monkeypatch.setattr(volume_mod, "_fallocate", refuse)
    monkeypatch.setattr(volume_mod, "_ZERO_CHUNK", 4096)
    _fill(vol)
    vol.discard(512, 10000)
    vol.write_zeroes(20000, 3000, False)
    data = os.pread(vol.fd, 65536, 0)
    assert data[:512] == b"D" * 512 and data[512:10512] == bytes(10000)
    assert data[10512:20000] == b"D" * (20000 - 10512)
    assert data[20000:23000] == bytes(3000) and data[23000:] == b"D" * (65536 - 23000)


def test_other_fallocate_errors_surface(
    vol: SparseFileVolume, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    def fail(fd: int, mode: int, offset: int, length: int) -> int:
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(volume_mod, "_fallocate", fail)
    with pytest.raises(StorageError):
        vol.discard(0, 512)


def test_resize_grows_only(vol: SparseFileVolume, path: Path) -> None:
    vol.resize(2 * SIZE)
    assert vol.size == 2 * SIZE == os.stat(path).st_size
    with pytest.raises(StorageError):
        vol.resize(SIZE)


def test_read_only_volume(path: Path) -> None:
    with SparseFileVolume(path, read_only=True) as ro:
        assert ro.read_only
        buf = bytearray(16)
        assert ro.preadv([memoryview(buf)], 0) == 16
        for op in (
            lambda: ro.pwritev([memoryview(buf)], 0),
            lambda: ro.discard(0, 512),
            lambda: ro.write_zeroes(0, 512, True),
            lambda: ro.resize(2 * SIZE),
        ):
            with pytest.raises(StorageError):
                op()


def test_flush_and_close(path: Path) -> None:
    v = SparseFileVolume(path)
    v.flush()
    v.close()
    v.close()  # idempotent
    assert v.fd == -1
    with pytest.raises(StorageError):
        v.flush()


def test_missing_file_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        SparseFileVolume(tmp_path / "nope")
