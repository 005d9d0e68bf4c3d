"""Composing the completions of asynchronous volume requests (``IoDone``).

A virtio-blk request may take more than one engine request: a write without
writeback is a write and then a flush (``then_flush``), a DISCARD or
WRITE_ZEROES is one engine request per segment (``join``).  Each helper
returns one ``IoDone`` that calls the request's own exactly once, from
whichever engine thread finishes last.
"""

from __future__ import annotations

import threading

from offload.errors import StorageError
from offload.storage.volume import AsyncVolume, IoDone, Volume

__all__ = ["is_async", "join", "then_flush"]


def is_async(volume: Volume) -> bool:
    """Whether ``volume`` also takes requests asynchronously (``AsyncVolume``)."""
    return callable(getattr(volume, "aio_preadv", None))


def then_flush(aio: AsyncVolume, done: IoDone) -> IoDone:
    """Write-through: the write completes once a flush after it has."""

    def written(error: StorageError | None) -> None:
        if error is not None:
            done(error)
            return
        try:
            aio.aio_flush(done)
        except StorageError as exc:
            done(exc)

    return written


def join(count: int, done: IoDone) -> IoDone:
    """One completion for ``count`` engine requests (the first error wins)."""
    return done if count == 1 else _Join(count, done)


class _Join:
    def __init__(self, count: int, done: IoDone) -> None:
        self._left = count
        self._error: StorageError | None = None
        self._done = done
        self._lock = threading.Lock()

    def __call__(self, error: StorageError | None) -> None:
        with self._lock:
            self._left -= 1
            if error is not None and self._error is None:
                self._error = error
            finished = self._left == 0
        if finished:
            self._done(self._error)
