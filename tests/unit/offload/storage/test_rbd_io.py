"""RbdImageIo over a fake librbd image: gather/scatter, error translation, refusals."""

from __future__ import annotations

import errno

import pytest
import rbd

from offload.errors import StorageError
from offload.storage.rbd_io import RbdImageIo
from tests.unit.offload.storage.fake_rbd import FakeImage


class Results:
    def __init__(self) -> None:
        self.got: list[StorageError | None] = []

    def __call__(self, error: StorageError | None) -> None:
        self.got.append(error)


def test_write_gathers_and_read_scatters_across_buffers() -> None:
    image = FakeImage(1 << 20)
    io = RbdImageIo(image, "p/i")
    assert io.size == 1 << 20
    done = Results()
    io.aio_pwritev([memoryview(b"ab" * 256), memoryview(b"cd" * 1792)], 4096, done)
    assert done.got == []  # nothing happens until librbd completes it
    image.complete()
    assert done.got == [None]
    a, b = memoryview(bytearray(1000)), memoryview(bytearray(3096))
    io.aio_preadv([a, b], 4096, done)
    image.complete()
    assert done.got == [None, None]
    assert bytes(a) + bytes(b) == b"ab" * 256 + b"cd" * 1792


def test_short_read_zero_fills_the_rest() -> None:
    image = FakeImage(8192)
    image.data[:] = b"\x07" * 8192
    io = RbdImageIo(image, "p/i")
    view = memoryview(bytearray(b"\xff" * 4096))
    done = Results()
    io.aio_preadv([view], 6144, done)  # 2048 bytes left in the image
    image.complete()
    assert done.got == [None]
    assert bytes(view) == b"\x07" * 2048 + bytes(2048)


@pytest.mark.parametrize("kind", ["read", "write", "flush", "discard", "write_zeroes"])
def test_a_failed_completion_is_a_storage_error(kind: str) -> None:
    image = FakeImage(1 << 16)
    image.fail_with = -errno.ESHUTDOWN  # what a blocklisted client gets
    io = RbdImageIo(image, "p/i")
    done = Results()
    view = memoryview(bytearray(512))
    submit = {
        "read": lambda: io.aio_preadv([view], 0, done),
        "write": lambda: io.aio_pwritev([view], 0, done),
        "flush": lambda: io.aio_flush(done),
        "discard": lambda: io.aio_discard(0, 512, done),
        "write_zeroes": lambda: io.aio_write_zeroes(0, 512, False, done),
    }[kind]
    submit()
    image.complete()
    (error,) = done.got
    assert isinstance(error, StorageError)
    assert "ESHUTDOWN" in str(error) and "p/i" in str(error)


def test_a_refused_submission_raises_and_never_calls_back() -> None:
    image = FakeImage(1 << 16)
    image.refuse = rbd.InvalidArgument("bad")
    io = RbdImageIo(image, "p/i")
    done = Results()
    with pytest.raises(StorageError, match="write on p/i refused"):
        io.aio_pwritev([memoryview(b"x" * 512)], 0, done)
    assert done.got == []


def test_closed_volume_refuses_io() -> None:
    io = RbdImageIo(FakeImage(4096), "p/i")
    io.close()
    with pytest.raises(StorageError, match="closed"):
        io.aio_flush(Results())


def test_resize_grows_never_shrinks() -> None:
    image = FakeImage(4096)
    io = RbdImageIo(image, "p/i")
    io.resize(8192)
    assert io.size == 8192 and image.size() == 8192
    image.resize(16384)  # grown by someone else: adopted as is
    assert io.image_size() == 16384
    io.resize(16384)
    assert io.size == 16384
    with pytest.raises(StorageError, match="refusing to shrink"):
        io.resize(4096)
