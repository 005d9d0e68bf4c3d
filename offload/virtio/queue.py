"""The split virtqueue, device side (OASIS virtio 1.2 §2.7).

Ring layout, all little-endian: the descriptor table (16 bytes per entry),
the available ring (flags, idx, ring[size], used_event) and the used ring
(flags, idx, {id, len}[size], avail_event).  The queue keeps memoryviews of
the three areas, taken through ``GuestMemory`` and re-taken whenever the
memory table's ``generation`` changes, and reads and writes them with
precompiled ``struct`` objects; descriptor buffers are handed out as views,
never copied.

``pop`` reads avail.idx only when its shadow copy is used up.  A jump of
more than ``size`` entries, a head index >= ``size`` or ring areas outside
guest memory raise a ``GuestRingError``: the caller must mark the device
NEEDS_RESET, and so does a used ring that overlaps the descriptor table or
the avail ring (the device's own writes would then feed it new requests
without end).  A malformed chain raises a ``GuestDescriptorError`` after its
head was consumed; the caller pushes that head back with used len 0.

``push`` writes the used element, then publishes used.idx; ``push_many``
writes a batch of elements and publishes used.idx once.  The ordering relies
on x86-TSO (stores are not reordered with stores, loads not with loads) as
Python has no fence primitive; the one store->load ordering that matters,
publishing used.idx (or avail_event) before reading used_event (or
avail.idx), is forced with an uncontended lock round-trip, whose locked
instruction is a full barrier.

Notification suppression: with EVENT_IDX, ``should_notify`` applies
``vring_need_event`` to the driver's used_event and remembers what it last
signalled (invalidating that memory when used.idx laps it, as QEMU does);
``set_avail_event`` re-arms driver kicks, after which the device must call
``has_available`` once more to close the race with a concurrent add.
Without EVENT_IDX, VRING_AVAIL_F_NO_INTERRUPT is honoured.  Kicks are
suppressed while the device drains: ``disable_kicks`` sets
VRING_USED_F_NO_NOTIFY (without EVENT_IDX; with it the avail_event left
behind by the last ``enable_kicks`` already silences the driver), and
``enable_kicks`` clears the flag or moves avail_event, with a full barrier,
before the device goes to sleep; the ``has_available`` re-check applies.

Mid-drain interrupts: the transport may set ``notifier`` (a callable that
writes the call eventfd).  ``signal_used`` then signals right away when
``should_notify`` says the driver is waiting, so a device that pushes
completions in small batches lets the driver reap and refill while it keeps
draining (with EVENT_IDX the driver asks again only when it goes to sleep, so
this costs one eventfd write per driver sleep, not per batch).  Without a
notifier ``signal_used`` does nothing and the caller's final
``should_notify`` covers everything.

Inflight tracking (VHOST_USER_GET/SET_INFLIGHT_FD) hooks in through
``InflightHooks``: ``on_pop(head)`` runs once a head is consumed from the
avail ring, before its chain is walked; ``on_push(head)`` runs after the
used.idx that covers it is published.  A tracker that crashes between the
two can recover the head from the used ring itself, so no pre-push hook is
needed.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable
from typing import Protocol

from offload.errors import (
    GuestMemoryError,
    InvalidAvailRingIndex,
    InvalidHeadIndex,
    VringAddressOutOfRange,
    VringAreasOverlap,
)
from offload.memory import GuestMemory
from offload.virtio.chain import DescriptorChain, walk_chain

__all__ = [
    "AVAIL_F_NO_INTERRUPT",
    "InflightHooks",
    "MAX_QUEUE_SIZE",
    "SplitQueue",
    "USED_F_NO_NOTIFY",
    "vring_need_event",
]

AVAIL_F_NO_INTERRUPT = 1
USED_F_NO_NOTIFY = 1
MAX_QUEUE_SIZE = 32768

_USED_ELEM = struct.Struct("<II")
_pack_used_elem = _USED_ELEM.pack_into


class InflightHooks(Protocol):
    """Inflight-descriptor tracking, implemented by the vhost-user layer."""

    def on_pop(self, head: int) -> None:
        """``head`` was taken from the avail ring and is now in flight."""

    def on_push(self, head: int) -> None:
        """``head`` was returned and the used.idx covering it is published."""


def vring_need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """Whether moving from ``old_idx`` to ``new_idx`` crosses ``event_idx`` (mod 2**16)."""
    return (new_idx - event_idx - 1) & 0xFFFF < (new_idx - old_idx) & 0xFFFF


class SplitQueue:
    """One split virtqueue seen from the device."""

    def __init__(
        self,
        mem: GuestMemory,
        *,
        size: int,
        desc_gpa: int,
        avail_gpa: int,
        used_gpa: int,
        event_idx: bool,
        inflight: InflightHooks | None = None,
    ) -> None:
        if not 0 < size <= MAX_QUEUE_SIZE or size & (size - 1):
            raise ValueError(f"queue size {size} is not a power of 2 in 1..{MAX_QUEUE_SIZE}")
        self.mem = mem
        self.size = size
        self.desc_gpa = desc_gpa
        self.avail_gpa = avail_gpa
        self.used_gpa = used_gpa
        self.event_idx = event_idx
        self.inflight = inflight
        self._last_avail_idx = 0
        self._shadow_avail_idx = 0
        self._used_idx = 0
        self._signalled_used = 0
        self._signalled_valid = False
        self._unsignalled = False
        self._generation = -1
        self._desc = self._avail = self._used = memoryview(b"")
        self._avail16 = self._used16 = memoryview(b"").cast("H")
        self._fence_lock = threading.Lock()
        self.notifier: Callable[[], None] | None = None

    # -- indices (SET/GET_VRING_BASE) --------------------------------------

    @property
    def last_avail_idx(self) -> int:
        """Free-running index of the next avail entry the device will consume."""
        return self._last_avail_idx

    @last_avail_idx.setter
    def last_avail_idx(self, value: int) -> None:
        self._last_avail_idx = self._shadow_avail_idx = value & 0xFFFF

    @property
    def used_idx(self) -> int:
        """Free-running index of the next used entry the device will write."""
        return self._used_idx

    @used_idx.setter
    def used_idx(self, value: int) -> None:
        self._used_idx = value & 0xFFFF
        self._signalled_valid = False

    def load_used_idx(self) -> int:
        """Take ``used_idx`` from the ring's used.idx (resuming a started ring)."""
        self._map()
        self.used_idx = self._used16[1]
        return self._used_idx

    # -- ring access -----------------------------------------------------------

    def _map(self) -> None:
        generation = self.mem.generation
        if generation == self._generation:
            return
        size = self.size
        used_end = self.used_gpa + 6 + 8 * size
        for name, start, length in (("descriptor table", self.desc_gpa, 16 * size),
                                    ("avail ring", self.avail_gpa, 6 + 2 * size)):  # fmt: skip
            if start < used_end and self.used_gpa < start + length:
                self._generation = -1
                raise VringAreasOverlap(f"the used ring overlaps the {name}")
        try:
            self._desc = self.mem.view(self.desc_gpa, 16 * size)
            self._avail = self.mem.view(self.avail_gpa, 6 + 2 * size)
            self._used = self.mem.view(self.used_gpa, 6 + 8 * size)
        except GuestMemoryError as exc:
            self._generation = -1
            raise VringAddressOutOfRange(str(exc)) from exc
        # Ring indices are read and written as single 16-bit accesses through
        # these views: struct.pack_into zero-fills its target before writing
        # and the '<H' unpacker reads byte by byte, so a concurrent driver
        # could see a torn or transiently zero index.
        self._avail16 = self._avail.cast("H")
        self._used16 = self._used.cast("H")
        self._generation = generation

    def _fence(self) -> None:
        with self._fence_lock:
            pass

    def has_available(self) -> bool:
        """Whether the driver has made buffers available that were not popped yet."""
        if self.mem.generation != self._generation:
            self._map()
        self._shadow_avail_idx = self._avail16[1]
        return self._shadow_avail_idx != self._last_avail_idx

    def available(self) -> int:
        """How many entries the driver has made available past ``last_avail_idx`` (unchecked)."""
        if self.mem.generation != self._generation:
            self._map()
        self._shadow_avail_idx = self._avail16[1]
        return (self._shadow_avail_idx - self._last_avail_idx) & 0xFFFF

    def pop(self) -> DescriptorChain | None:
        """Consume the next available chain, or return None if there is none."""
        if self.mem.generation != self._generation:
            self._map()
        last = self._last_avail_idx
        if self._shadow_avail_idx == last:
            self._shadow_avail_idx = self._avail16[1]
            if self._shadow_avail_idx == last:
                return None
        size = self.size
        if (self._shadow_avail_idx - last) & 0xFFFF > size:
            raise InvalidAvailRingIndex(
                f"avail.idx {self._shadow_avail_idx} is more than {size} past {last}"
            )
        head: int = self._avail16[2 + (last & (size - 1))]
        if head >= size:
            raise InvalidHeadIndex(f"avail ring entry {last} names head {head} >= {size}")
        self._last_avail_idx = (last + 1) & 0xFFFF
        if self.inflight is not None:
            self.inflight.on_pop(head)
        return walk_chain(self.mem, self._desc, size, head)

    def chain_at(self, head: int) -> DescriptorChain:
        """Walk the chain at ``head`` without the avail ring (inflight resubmission)."""
        self._map()
        if not 0 <= head < self.size:
            raise InvalidHeadIndex(f"head {head} >= {self.size}")
        return walk_chain(self.mem, self._desc, self.size, head)

    def push(self, head: int, written: int) -> None:
        """Return ``head`` with ``written`` bytes in its writable buffers."""
        self.push_many(((head, written),))

    def push_many(self, completions: Iterable[tuple[int, int]]) -> None:
        """Return a batch of (head, written); used.idx is published once, last."""
        if self.mem.generation != self._generation:
            self._map()
        used = self._used
        mask = self.size - 1
        start = idx = self._used_idx
        pack = _pack_used_elem
        heads: list[int] = []
        track = heads.append if self.inflight is not None else None
        for head, written in completions:
            if not 0 <= head <= mask:
                raise ValueError(f"head {head} is outside the queue")
            # Zero-filled then written by pack_into, but this slot is past
            # used.idx, so the driver does not read it yet.
            pack(used, 4 + 8 * (idx & mask), head, written)
            idx = (idx + 1) & 0xFFFF
            if track is not None:
                track(head)
        if idx == start:
            return
        self._used16[1] = idx  # published after the elements (x86-TSO)
        self._used_idx = idx
        self._unsignalled = True
        count = (idx - start) & 0xFFFF
        if (idx - self._signalled_used) & 0xFFFF < count:
            self._signalled_valid = False  # used.idx lapped the last signalled value
        if self.inflight is not None:
            for head in heads:
                self.inflight.on_push(head)

    # -- notifications -----------------------------------------------------

    def should_notify(self) -> bool:
        """Whether the driver wants an interrupt for what was pushed since the last call."""
        if not self._unsignalled:
            return False
        self._unsignalled = False
        if self.mem.generation != self._generation:
            self._map()
        with self._fence_lock:  # used.idx must be visible before we read the driver's wishes
            pass
        if not self.event_idx:
            return not self._avail16[0] & AVAIL_F_NO_INTERRUPT
        old, valid = self._signalled_used, self._signalled_valid
        new = self._signalled_used = self._used_idx
        self._signalled_valid = True
        if not valid:
            return True
        used_event: int = self._avail16[2 + self.size]
        return vring_need_event(used_event, new, old)

    def signal_used(self) -> None:
        """Interrupt the driver now if it is waiting (mid-drain); needs ``notifier``."""
        if self._unsignalled and self.notifier is not None and self.should_notify():
            self.notifier()

    def disable_kicks(self) -> None:
        """Ask the driver not to kick while the device drains (VRING_USED_F_NO_NOTIFY).

        Only without EVENT_IDX: with it, the driver stops kicking by itself
        once it has added past the avail_event of the last ``enable_kicks``.
        """
        if not self.event_idx:
            self._map()
            self._used16[0] = USED_F_NO_NOTIFY

    def enable_kicks(self) -> None:
        """Ask for kicks again before the device sleeps; then re-check ``has_available``."""
        if self.mem.generation != self._generation:
            self._map()
        if self.event_idx:
            self._used16[2 + 4 * self.size] = self._last_avail_idx
            with self._fence_lock:  # see _fence
                pass
            return
        if self._used16[0]:
            self._used16[0] = 0
            self._fence()

    def set_avail_event(self) -> None:
        """Ask for a kick once the driver adds past ``last_avail_idx`` (EVENT_IDX only).

        Call ``has_available`` afterwards: a buffer added before the store was
        visible produces no kick.
        """
        if not self.event_idx:
            return
        self._map()
        self._used16[2 + 4 * self.size] = self._last_avail_idx
        self._fence()
