"""wipe_disk on real sparse files (and a loop device when we may create one)."""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host_agent.storage import wipe
from host_agent.storage.errors import WipeFailed, WipeVerificationFailed
from host_agent.storage.extents import data_extents
from host_agent.storage.wipe import wipe_disk

MIB = 1 << 20


def scatter(path: Path, size: int, writes: list[tuple[int, int]]) -> None:
    """A sparse file of *size* with random bytes at each ``(offset, length)``."""
    with path.open("wb") as f:
        f.truncate(size)
        for offset, length in writes:
            f.seek(offset)
            f.write(os.urandom(length))
        f.flush()
        os.fsync(f.fileno())


def assert_all_zero(path: Path) -> None:
    with path.open("rb") as f:
        while chunk := f.read(4 * MIB):
            assert not any(chunk.rstrip(b"\0"))


def test_wipe_of_scattered_data_leaves_zeros_and_frees_blocks(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    rng = random.Random(7)
    writes = [(rng.randrange(63 * MIB), rng.randrange(1, 256 << 10)) for _ in range(40)]
    scatter(path, 64 * MIB, writes)
    before = path.stat().st_blocks * 512
    assert before > 0
    res = wipe_disk(path)
    assert res.kind == "file" and res.method == "punch_hole"
    assert res.size_bytes == res.bytes_wiped == path.stat().st_size == 64 * MIB
    assert path.stat().st_blocks == 0
    assert res.bytes_released == before
    assert res.bytes_read_back == res.samples * wipe.SAMPLE_BYTES
    assert_all_zero(path)


def test_verification_catches_a_punch_that_did_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wipe, "_punch_hole", lambda fd, offset, length: None)
    path = tmp_path / "disk.img"
    scatter(path, 16 * MIB, [(5 * MIB + 123, 4096)])
    with pytest.raises(WipeVerificationFailed) as err:
        wipe_disk(path)
    with path.open("rb") as f:
        first = next(i for i, b in enumerate(f.read()) if b)
    assert err.value.offset == first
    assert f"offset {first}" in str(err.value)


def test_samples_catch_data_the_extent_walk_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wipe, "_punch_hole", lambda fd, offset, length: None)
    monkeypatch.setattr(wipe, "data_extents", lambda fd, start, end: iter(()))
    path = tmp_path / "disk.img"
    path.write_bytes(b"\xff" * MIB)
    with pytest.raises(WipeVerificationFailed):
        wipe_disk(path, samples=256)


def test_falls_back_to_zeroing_extents_without_punch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(wipe, "_punch_hole", unsupported)
    path = tmp_path / "disk.img"
    scatter(path, 32 * MIB, [(0, MIB), (20 * MIB, 2 * MIB)])
    fd = os.open(path, os.O_RDONLY)
    extent_bytes = sum(length for _, length in data_extents(fd, 0, 32 * MIB))
    os.close(fd)
    res = wipe_disk(path)
    assert res.method == "zero_extents"
    assert res.bytes_wiped == extent_bytes
    assert res.bytes_read_back >= extent_bytes  # zeroed extents are read back in full
    assert_all_zero(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.img"
    path.touch()
    res = wipe_disk(path)
    assert (res.size_bytes, res.bytes_read_back) == (0, 0)


def test_missing_path_and_directory_fail(tmp_path: Path) -> None:
    with pytest.raises(WipeFailed, match="cannot open"):
        wipe_disk(tmp_path / "missing.img")
    with pytest.raises(WipeFailed):
        wipe_disk(tmp_path)


@settings(max_examples=20, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 8 * MIB - 1), st.integers(1, 300_000)), min_size=1, max_size=12
    )
)
def test_any_scatter_is_wiped(writes: list[tuple[int, int]]) -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        path = Path(tmp) / "disk.img"
        scatter(path, 8 * MIB, [(o, min(n, 8 * MIB - o)) for o, n in writes])
        wipe_disk(path, samples=64)
        assert path.stat().st_blocks == 0
        assert_all_zero(path)


# ------------------------------------------------------------------ block device


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[Path]:
    """A loop device over a 32 MiB file full of data, or a skip when we cannot make one."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("needs root and losetup")
    backing = tmp_path / "backing.img"
    backing.write_bytes(os.urandom(32 * MIB))
    proc = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"losetup failed: {proc.stderr.strip()}")
    device = Path(proc.stdout.strip())
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", str(device)], check=False)


def test_block_device_is_zeroed_and_read_back(loop_device: Path) -> None:
    res = wipe_disk(loop_device, samples=16)
    assert res.kind == "block"
    assert res.method in ("discard_zeroout", "zeroout", "write_zeros")
    assert res.bytes_wiped == res.size_bytes == 32 * MIB
    assert res.bytes_read_back == 32 * MIB + 16 * wipe.SAMPLE_BYTES
    assert_all_zero(loop_device)


def test_block_device_sampled_mode(loop_device: Path) -> None:
    res = wipe_disk(loop_device, samples=64, full_readback=False)
    assert res.bytes_read_back == 64 * wipe.SAMPLE_BYTES
    assert_all_zero(loop_device)


def test_block_device_in_use_is_refused(loop_device: Path) -> None:
    held = os.open(loop_device, os.O_RDONLY | os.O_EXCL)
    try:
        with pytest.raises(WipeFailed, match="busy"):
            wipe_disk(loop_device)
    finally:
        os.close(held)
