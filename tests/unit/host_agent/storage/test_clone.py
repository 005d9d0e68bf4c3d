"""clone_volume, create_volume and grow_volume on real files in tmp_path."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import pytest

from host_agent.storage import clone
from host_agent.storage.clone import clone_volume, create_volume, grow_volume
from host_agent.storage.errors import VolumeExists, VolumeIOError, VolumeSizeError

MIB = 1 << 20


def make_image(path: Path, size: int = 32 * MIB) -> bytes:
    """Data at 0, a hole, data at 16 MiB, explicit (allocated) zeros, a trailing hole."""
    with path.open("wb") as f:
        f.truncate(size)
        f.write(os.urandom(MIB))
        f.seek(16 * MIB)
        f.write(os.urandom(MIB))
        f.write(bytes(MIB))
    return path.read_bytes()


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def only(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_clone_keeps_holes_and_grows(tmp_path: Path) -> None:
    src, dst = tmp_path / "image.img", tmp_path / "vol.img"
    data = make_image(src)
    res = clone_volume(src, dst, size_bytes=64 * MIB)
    assert res.method in ("reflink", "copy_file_range", "sparse_copy")
    assert res.size_bytes == dst.stat().st_size == 64 * MIB
    with dst.open("rb") as f:
        assert f.read(len(data)) == data
        assert f.read() == bytes(32 * MIB)
    assert allocated(dst) <= allocated(src)
    assert res.bytes_copied <= 3 * MIB
    assert only(tmp_path) == ["image.img", "vol.img"]


def test_reflink_unsupported_falls_back_to_copy_file_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_reflink(fd: int, request: int, arg: int) -> int:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(fcntl, "ioctl", no_reflink)
    src, dst = tmp_path / "image.img", tmp_path / "vol.img"
    data = make_image(src)
    res = clone_volume(src, dst, size_bytes=len(data))
    assert res.method == "copy_file_range"
    assert res.bytes_copied == 3 * MIB  # the two data extents, holes skipped
    assert dst.read_bytes() == data


def test_sparse_copy_also_skips_zero_blocks_inside_extents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(*args: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(fcntl, "ioctl", unsupported)
    monkeypatch.setattr(os, "copy_file_range", unsupported)
    src, dst = tmp_path / "image.img", tmp_path / "vol.img"
    data = make_image(src)
    res = clone_volume(src, dst, size_bytes=40 * MIB)
    assert res.method == "sparse_copy"
    assert res.bytes_copied == 2 * MIB  # the explicit zero MiB is not written
    assert dst.read_bytes()[: len(data)] == data
    assert allocated(dst) < allocated(src)


def test_reflink_when_the_file_system_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_reflink(dst_fd: int, request: int, src_fd: int) -> int:
        assert request == clone._FICLONE
        os.copy_file_range(src_fd, dst_fd, os.fstat(src_fd).st_size, 0, 0)
        return 0

    monkeypatch.setattr(fcntl, "ioctl", fake_reflink)
    src, dst = tmp_path / "image.img", tmp_path / "vol.img"
    data = make_image(src)
    res = clone_volume(src, dst, size_bytes=len(data))
    assert (res.method, res.bytes_copied) == ("reflink", 0)
    assert dst.read_bytes() == data


def test_size_below_the_image_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "image.img"
    make_image(src)
    with pytest.raises(VolumeSizeError, match="smaller than the image"):
        clone_volume(src, tmp_path / "vol.img", size_bytes=MIB)
    assert only(tmp_path) == ["image.img"]


def test_existing_destination_is_never_overwritten(tmp_path: Path) -> None:
    src, dst = tmp_path / "image.img", tmp_path / "vol.img"
    make_image(src)
    dst.write_bytes(b"tenant data")
    with pytest.raises(VolumeExists):
        clone_volume(src, dst, size_bytes=64 * MIB)
    assert dst.read_bytes() == b"tenant data"
    assert only(tmp_path) == ["image.img", "vol.img"]


def test_failure_mid_copy_leaves_no_volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(src: int, dst: int, size: int) -> tuple[str, int]:
        os.write(dst, b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(clone, "_copy", full_disk)
    src = tmp_path / "image.img"
    make_image(src)
    with pytest.raises(VolumeIOError, match="No space left"):
        clone_volume(src, tmp_path / "vol.img", size_bytes=64 * MIB)
    assert only(tmp_path) == ["image.img"]


def test_missing_image(tmp_path: Path) -> None:
    with pytest.raises(VolumeIOError, match="cannot open image"):
        clone_volume(tmp_path / "nope.img", tmp_path / "vol.img", size_bytes=MIB)


def test_create_volume_is_sparse_and_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "data.img"
    create_volume(path, 10 << 30)
    assert path.stat().st_size == 10 << 30
    assert allocated(path) == 0
    with pytest.raises(VolumeExists):
        create_volume(path, MIB)
    with pytest.raises(VolumeSizeError):
        create_volume(tmp_path / "neg.img", -1)
    assert only(tmp_path) == ["data.img"]


def test_grow_volume_grows_only(tmp_path: Path) -> None:
    path = tmp_path / "data.img"
    create_volume(path, MIB)
    grow_volume(path, 4 * MIB)
    assert path.stat().st_size == 4 * MIB
    grow_volume(path, 4 * MIB)
    assert path.stat().st_size == 4 * MIB
    with pytest.raises(VolumeSizeError, match="cannot shrink"):
        grow_volume(path, MIB)
    assert path.stat().st_size == 4 * MIB
    assert allocated(path) == 0
    with pytest.raises(VolumeIOError):
        grow_volume(tmp_path / "missing.img", MIB)
