"""Composed completions: one call per virtio-blk request, the first error wins."""

from __future__ import annotations

import threading

from offload.errors import StorageError
from offload.storage.aio import is_async, join, then_flush
from offload.storage.rbd_io import RbdImageIo
from tests.unit.offload.storage.fake_rbd import FakeImage


def test_join_calls_once_after_every_part_from_any_thread() -> None:
    got: list[StorageError | None] = []
    done = join(8, got.append)
    first = StorageError("part 3")
    threads = [threading.Thread(target=done, args=(first if i == 3 else None,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [first]


def test_join_of_one_is_the_completion_itself() -> None:
    got: list[StorageError | None] = []
    assert join(1, got.append) == got.append


def test_then_flush_flushes_only_after_a_good_write() -> None:
    image = FakeImage(4096)
    io = RbdImageIo(image, "p/i")
    got: list[StorageError | None] = []
    after = then_flush(io, got.append)
    after(None)
    assert [op.kind for op in image.pending] == ["flush"]
    assert got == []
    image.complete()
    assert got == [None]
    failed = StorageError("write failed")
    then_flush(io, got.append)(failed)
    assert image.pending == []
    assert got == [None, failed]


def test_is_async_tells_the_engines_apart() -> None:
    assert is_async(RbdImageIo(FakeImage(4096), "p/i"))
    assert not is_async(object())  # type: ignore[arg-type]
