"""A started ring on the I/O side: its notification fds and its worker thread.

How it works
------------
``VringSlot`` holds one ring's call and err eventfds, which outlive a worker:
QEMU swaps the call fd while a ring runs (when the guest masks an MSI-X
vector), so the slot's lock is held for the swap-and-close and for each
``eventfd_write``, and a worker never writes to an fd number that was closed
and reused.

``QueueWorker`` is one thread per started ring.  The kick eventfd belongs to
the front-end, which created it ``O_NONBLOCK``; that flag lives on the shared
file description, so we must not flip it (QEMU would then block in its own
reads).  The worker sleeps in ``poll()`` on the kick fd, on its own wake
eventfd (used to stop it, or to re-check a ring that was just enabled) and on
whatever fds the device names for this ring (``queue_events``, asked before
every sleep: a TAP fd for an RX ring with buffers to fill), drains the kick
counter with one ``eventfd_read`` (the device's fds are left to the device),
lets the device process *everything* available (``process_queue``), and
signals the call eventfd once if the device says the driver wants it.  The
device may also signal in the middle of a drain: the queue's ``notifier`` is
the slot's ``signal_call``.  A device that leaves work on the ring names a
delay (``queue_timeout``, QoS); the worker then polls with that timeout and
runs the ring again without a kick.  ``poll``, ``read``, ``preadv`` and
``pwritev`` release the GIL, so one queue waiting never holds up another.
Measurements behind one thread per ring (and no spinning) are in
``docs/offload.md``.

A device exception that is not an ``OffloadError`` is a bug: the ring stops
(``broken``), the err eventfd is signalled, the process and the other rings
live on.  A device that went NEEDS_RESET is treated the same way until the
front-end restarts the ring.

When the ring stops, the worker's last act on its thread is the device's
``quiesce_queue``: a device with requests still in flight in an asynchronous
engine completes them before ``stop`` returns the ring's ``last_avail_idx``
(GET_VRING_BASE) and before the session unmaps guest memory.

``ResumingQueue`` hands out the heads a previous back-end left in flight
(inflight tracking) before the avail ring's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading

from offload.errors import OffloadError
from offload.memory import GuestMemory
from offload.vhost_user.device import VhostUserDevice
from offload.vhost_user.inflight import InflightQueue
from offload.virtio.chain import DescriptorChain
from offload.virtio.queue import SplitQueue

__all__ = ["QueueWorker", "ResumingQueue", "VringSlot", "close_fd"]

log = logging.getLogger(__name__)


def close_fd(fd: int) -> None:
    """Close ``fd`` if it is one (negative means none), ignoring errors."""
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


_close = close_fd


class ResumingQueue(SplitQueue):
    """A queue that hands out the inflight heads of a previous back-end first."""

    def __init__(
        self,
        mem: GuestMemory,
        *,
        size: int,
        desc_gpa: int,
        avail_gpa: int,
        used_gpa: int,
        event_idx: bool,
        inflight: InflightQueue,
        resubmit: tuple[int, ...],
    ) -> None:
        super().__init__(
            mem,
            size=size,
            desc_gpa=desc_gpa,
            avail_gpa=avail_gpa,
            used_gpa=used_gpa,
            event_idx=event_idx,
            inflight=inflight,
        )
        self._resubmit = list(reversed(resubmit))

    def has_available(self) -> bool:
        return bool(self._resubmit) or super().has_available()

    def pop(self) -> DescriptorChain | None:
        if self._resubmit:
            return self.chain_at(self._resubmit.pop())
        return super().pop()


class VringSlot:
    """Per-ring fds that outlive a worker (call/err can change while it runs)."""

    __slots__ = ("call_fd", "enabled", "err_fd", "lock", "worker")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.call_fd = -1
        self.err_fd = -1
        self.enabled = False
        self.worker: QueueWorker | None = None

    def signal_call(self) -> None:
        with self.lock:
            if self.call_fd >= 0:
                os.eventfd_write(self.call_fd, 1)

    def signal_err(self) -> None:
        with self.lock:
            if self.err_fd >= 0:
                os.eventfd_write(self.err_fd, 1)

    def set_call(self, fd: int) -> None:
        with self.lock:
            old, self.call_fd = self.call_fd, fd
            _close(old)

    def set_err(self, fd: int) -> None:
        with self.lock:
            old, self.err_fd = self.err_fd, fd
            _close(old)


class QueueWorker:
    """One thread serving one started ring until ``stop``."""

    def __init__(
        self,
        *,
        index: int,
        queue: SplitQueue,
        kick_fd: int,
        slot: VringSlot,
        device: VhostUserDevice,
    ) -> None:
        self.index = index
        self.queue = queue
        self.kick_fd = kick_fd
        self._slot = slot
        self._device = device
        self._wake_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._stopping = False
        self.broken = False
        self._thread = threading.Thread(target=self._run, name=f"vhost-user-vq{index}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        os.eventfd_write(self._wake_fd, 1)

    def stop(self) -> int:
        """Stop and join the thread; returns the ring's ``last_avail_idx``.  Closes the kick fd."""
        self._stopping = True
        self.wake()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        _close(self.kick_fd)
        _close(self._wake_fd)
        self.kick_fd = self._wake_fd = -1
        return self.queue.last_avail_idx

    def _run(self) -> None:
        poller = select.poll()
        own = (self.kick_fd, self._wake_fd)
        for fd in own:
            poller.register(fd, select.POLLIN)
        poll = poller.poll
        read = os.eventfd_read
        events = self._device.queue_events
        watched: tuple[int, ...] = ()
        timeout = self._serve()  # buffers made available before the ring started
        while not self._stopping:
            wanted = () if self.broken else tuple(events(self.index))
            if wanted != watched:
                for fd in watched:
                    if fd not in wanted:
                        poller.unregister(fd)
                for fd in wanted:
                    if fd not in watched:
                        poller.register(fd, select.POLLIN)
                watched = wanted
            # Read only our own eventfds, only when poll reported them (the
            # front-end's kick fd may be blocking); the device's fds are its own.
            for fd, _ in poll(timeout):
                if fd in own:
                    try:  # noqa: SIM105 - contextlib.suppress costs 0.25 us per wake-up
                        read(fd)
                    except BlockingIOError:
                        pass
            if self._stopping:
                break
            timeout = None if self.broken else self._serve()
        self._quiesce()

    def _quiesce(self) -> None:
        """Before the ring is handed back, let the device finish what is in flight."""
        try:
            notify = self._device.quiesce_queue(self.index, self.queue)
        except Exception:
            log.exception("vq %d: device failed while quiescing", self.index)
            return
        if notify and not self.broken:
            self._slot.signal_call()

    def _serve(self) -> int | None:
        """Let the device drain the ring; returns a poll timeout (ms) if it asked for one."""
        device = self._device
        try:
            notify = device.process_queue(self.index, self.queue)
        except OffloadError as exc:  # devices complete guest errors themselves
            log.error("vq %d: %s", self.index, exc)
            notify = True
        except Exception:
            # A bug, not the guest: keep the process (and the other rings) alive.
            log.exception("vq %d: device failed; ring stopped", self.index)
            self.broken = True
            self._slot.signal_err()
            return None
        if notify:
            self._slot.signal_call()
        if device.needs_reset:
            # Nothing about the rings can be trusted: stop serving this one until
            # the front-end restarts it, and say so on the err eventfd.
            self.broken = True
            self._slot.signal_err()
            return None
        delay = device.queue_timeout(self.index)
        return max(1, int(delay * 1000)) if delay > 0 else None
