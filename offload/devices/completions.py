"""Hand-off of asynchronous request completions to the ring that submitted them.

An ``AsyncVolume`` (librbd) calls a request's completion from one of its own
threads, in whatever order the cluster answers.  Those threads must not touch
the virtqueue: only the ring's worker thread pushes to the used ring.  So each
ring has one ``CompletionChannel``:

* ``post(item)`` (any thread): append to a ``collections.deque`` (append and
  popleft are atomic), then, only if the worker said it is going to sleep
  (``arm``), ``eventfd_write`` the channel's eventfd.  While the worker is
  busy, a completion costs an append and no system call (the eventfd write
  also drops and retakes the GIL, which the librbd thread posting would
  fight the worker for);
* the device names that eventfd in ``queue_events``, so the ring's worker wakes
  from ``poll`` and calls ``process_queue``, which ``reap``s: it reads the
  eventfd, then drains the deque;
* before the worker sleeps, the device calls ``arm()``: it sets the flag,
  *then* looks at the deque, and if something is there already it writes the
  eventfd itself.  The poster appends, *then* reads the flag.  Whichever
  order the two run in (the GIL makes each step atomic), either the poster
  sees the flag and writes, or ``arm`` sees the item: no wake-up is lost;
* ``submitted`` and ``reaped`` are counted by the worker alone; their difference
  is what is still in flight, which ``wait_idle`` (the ring stopping) waits for.

Items are opaque here; the device decides what a completion carries.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections import deque
from typing import Generic, TypeVar

__all__ = ["CompletionChannel"]

T = TypeVar("T")


class CompletionChannel(Generic[T]):
    """Completions posted from any thread, reaped by one ring's worker."""

    __slots__ = ("_armed", "_items", "fd", "reaped", "submitted")

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._items: deque[T] = deque()
        self._armed = True
        self.submitted = 0
        self.reaped = 0

    @property
    def in_flight(self) -> int:
        return self.submitted - self.reaped

    def post(self, item: T) -> None:
        """Called once per submitted request, from any thread."""
        self._items.append(item)
        if self._armed:
            self._armed = False
            with contextlib.suppress(OSError):  # closed: the ring is gone, nobody waits
                os.eventfd_write(self.fd, 1)

    def pending(self) -> bool:
        """Whether something was posted and not reaped (worker thread; no system call)."""
        return bool(self._items)

    def arm(self) -> None:
        """The worker is about to sleep: the next post must wake it (worker thread)."""
        self._armed = True
        if self._items:
            self._armed = False
            os.eventfd_write(self.fd, 1)

    def reap(self) -> list[T]:
        """Everything posted so far (worker thread only)."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.fd)
        items = self._items
        out: list[T] = []
        append = out.append
        while items:
            append(items.popleft())
        self.reaped += len(out)
        return out

    def wait(self, timeout: float) -> bool:
        """Block until something was posted or ``timeout`` passed; True if posted."""
        self.arm()
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout * 1000))))

    def wait_idle(self, timeout: float) -> list[T]:
        """Reap until nothing is in flight or ``timeout`` passed; returns what was reaped."""
        deadline = time.monotonic() + timeout
        out = self.reap()
        while self.in_flight > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self.wait(left):
                out += self.reap()
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
