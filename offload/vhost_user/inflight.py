"""Inflight I/O tracking for split virtqueues (vhost-user INFLIGHT_SHMFD).

How it works
------------
The back-end allocates one shared-memory region (GET_INFLIGHT_FD) that the
front-end keeps for the life of the VM and hands back (SET_INFLIGHT_FD) to the
next back-end process after a restart or crash.  The region holds one queue
block per virtqueue, each ``inflight_queue_size(queue_size)`` bytes (64-byte
aligned)::

    u64 features | u16 version | u16 desc_num | u16 last_batch_head | u16 used_idx
    DescStateSplit[desc_num]: u8 inflight | u8 pad[5] | u16 next | u64 counter

(native byte order: both sides run on the same host).  The region is mapped
through ``GuestMemory`` (a one-region table at address 0), so this module, like
every other, never touches ``mmap`` itself.

``InflightQueue`` implements the virtqueue's ``InflightHooks``:

* ``on_pop(head)``: ``desc[head].counter = counter++``, then ``inflight = 1``;
* ``on_push(head)``: the queue calls it once the used.idx covering ``head``
  is published in guest memory; we link ``head`` into the batch list
  (``next`` / ``last_batch_head``), clear ``inflight``, then advance the stored
  ``used_idx`` by one.  Clearing only after the used index is published means a
  crash can never lose a request that was not completed; a crash between the
  publication and the clearing is repaired by recovery (below).

Recovery (``recover``) runs when a ring starts with a region attached.  A fresh
region (``version == 0``) is initialised.  Otherwise, if the stored ``used_idx``
lags the used ring's ``idx``, the heads the used ring itself lists between the
two were completed but not yet cleared; we clear exactly those (reading the used
ring, rather than trusting the ``last_batch_head`` list, is right whichever
order the queue called ``on_push`` and published its index).  The heads still
marked inflight are resubmitted in ``counter`` order, and the ring resumes with
``last_avail_idx = used.idx + len(resubmit)``: every popped head is either in
the used ring or resubmitted, so there is no lost and no doubled completion.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from offload.errors import OffloadError
from offload.memory import GuestMemory, MemoryRegion
from offload.vhost_user.errors import InflightRegionInvalid

__all__ = [
    "INFLIGHT_ALIGNMENT",
    "INFLIGHT_VERSION",
    "InflightQueue",
    "InflightRegion",
    "Recovery",
    "inflight_queue_size",
    "inflight_region_size",
]

INFLIGHT_VERSION: Final = 1
INFLIGHT_ALIGNMENT: Final = 64

_HEADER = struct.Struct("=QHHHH")  # features, version, desc_num, last_batch_head, used_idx
_DESC = struct.Struct("=B5xHQ")  # inflight, padding, next, counter
_U16 = struct.Struct("=H")
_U64 = struct.Struct("=Q")
_OFF_VERSION: Final = 8
_OFF_DESC_NUM: Final = 10
_OFF_LAST_BATCH_HEAD: Final = 12
_OFF_USED_IDX: Final = 14
_DESC_OFF_NEXT: Final = 6
_DESC_OFF_COUNTER: Final = 8


def inflight_queue_size(queue_size: int) -> int:
    """Bytes of one queue block, header included, rounded up to 64."""
    raw = _HEADER.size + _DESC.size * queue_size
    return -(-raw // INFLIGHT_ALIGNMENT) * INFLIGHT_ALIGNMENT


def inflight_region_size(num_queues: int, queue_size: int) -> int:
    """Bytes of the whole region for ``num_queues`` queues of ``queue_size``."""
    return num_queues * inflight_queue_size(queue_size)


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a ring resumes with: heads to process again first, then the avail index."""

    resubmit: tuple[int, ...]
    last_avail_idx: int
    fresh: bool


class InflightQueue:
    """One queue's block of the region; the virtqueue's ``InflightHooks``."""

    __slots__ = ("_counter", "_last_batch_head", "_used_idx", "_view", "desc_num")

    def __init__(self, view: memoryview, desc_num: int) -> None:
        if len(view) < inflight_queue_size(desc_num):
            raise InflightRegionInvalid(
                f"queue block of {len(view)} bytes is too small for {desc_num} descriptors"
            )
        self._view = view
        self.desc_num = desc_num
        self._counter = 0
        self._last_batch_head = int(_U16.unpack_from(view, _OFF_LAST_BATCH_HEAD)[0])
        self._used_idx = int(_U16.unpack_from(view, _OFF_USED_IDX)[0])

    # -- header fields -------------------------------------------------------

    @property
    def version(self) -> int:
        return int(_U16.unpack_from(self._view, _OFF_VERSION)[0])

    @property
    def used_idx(self) -> int:
        return int(_U16.unpack_from(self._view, _OFF_USED_IDX)[0])

    @property
    def last_batch_head(self) -> int:
        return int(_U16.unpack_from(self._view, _OFF_LAST_BATCH_HEAD)[0])

    def is_inflight(self, head: int) -> bool:
        return bool(self._view[_HEADER.size + head * _DESC.size])

    def counter_of(self, head: int) -> int:
        off = _HEADER.size + head * _DESC.size + _DESC_OFF_COUNTER
        return int(_U64.unpack_from(self._view, off)[0])

    def inflight_heads(self) -> list[int]:
        """Heads marked inflight, in the order they were popped (counter order)."""
        view, base, step = self._view, _HEADER.size, _DESC.size
        heads = [h for h in range(self.desc_num) if view[base + h * step]]
        heads.sort(key=self.counter_of)
        return heads

    # -- InflightHooks -------------------------------------------------------

    def on_pop(self, head: int) -> None:
        off = _HEADER.size + head * _DESC.size
        _U64.pack_into(self._view, off + _DESC_OFF_COUNTER, self._counter)
        self._counter += 1
        self._view[off] = 1

    def on_push(self, head: int) -> None:
        """``head`` is in the used ring and the used.idx covering it is published."""
        view = self._view
        off = _HEADER.size + head * _DESC.size
        _U16.pack_into(view, off + _DESC_OFF_NEXT, self._last_batch_head)
        _U16.pack_into(view, _OFF_LAST_BATCH_HEAD, head)
        self._last_batch_head = head
        view[off] = 0
        self._used_idx = used = (self._used_idx + 1) & 0xFFFF
        _U16.pack_into(view, _OFF_USED_IDX, used)

    # -- reconnect -----------------------------------------------------------

    def initialise(self, used_idx: int) -> None:
        """Start a fresh block: nothing inflight, in step with the used ring."""
        self._view[: inflight_queue_size(self.desc_num)] = bytes(inflight_queue_size(self.desc_num))
        _HEADER.pack_into(self._view, 0, 0, INFLIGHT_VERSION, self.desc_num, 0, used_idx & 0xFFFF)
        self._counter = 0
        self._last_batch_head = 0
        self._used_idx = used_idx & 0xFFFF

    def recover(self, ring_used_idx: int, used_id_at: Callable[[int], int]) -> Recovery:
        """Bring the block in step with the used ring and list what to resubmit.

        ``ring_used_idx`` is the used ring's ``idx`` now in guest memory and
        ``used_id_at(i)`` the head id stored in used ring slot ``i % size``.
        """
        _, version, desc_num, _, stored_used = _HEADER.unpack_from(self._view, 0)
        if version == 0:
            self.initialise(ring_used_idx)
            return Recovery((), ring_used_idx & 0xFFFF, fresh=True)
        if version != INFLIGHT_VERSION or desc_num != self.desc_num:
            raise InflightRegionInvalid(
                f"inflight block version {version} desc_num {desc_num}, "
                f"expected version {INFLIGHT_VERSION} desc_num {self.desc_num}"
            )
        lag = (ring_used_idx - stored_used) & 0xFFFF
        if lag > self.desc_num:
            raise InflightRegionInvalid(
                f"used ring idx {ring_used_idx} is {lag} entries past the tracked {stored_used}"
            )
        base, step = _HEADER.size, _DESC.size
        for i in range(lag):
            head = used_id_at((stored_used + i) & 0xFFFF)
            if 0 <= head < self.desc_num:
                self._view[base + head * step] = 0
        _U16.pack_into(self._view, _OFF_USED_IDX, ring_used_idx & 0xFFFF)
        self._used_idx = ring_used_idx & 0xFFFF
        self._last_batch_head = self.last_batch_head
        resubmit = self.inflight_heads()
        self._counter = max((self.counter_of(h) for h in resubmit), default=-1) + 1
        return Recovery(tuple(resubmit), (ring_used_idx + len(resubmit)) & 0xFFFF, fresh=False)


class InflightRegion:
    """The whole shared region: ``num_queues`` blocks of ``queue_size`` descriptors."""

    def __init__(
        self, fd: int, *, mmap_size: int, mmap_offset: int, num_queues: int, queue_size: int
    ) -> None:
        needed = inflight_region_size(num_queues, queue_size)
        if mmap_size < needed:
            raise InflightRegionInvalid(f"region of {mmap_size} bytes, need {needed}")
        self.num_queues = num_queues
        self.queue_size = queue_size
        self.mmap_size = mmap_size
        self._memory = GuestMemory()
        try:
            self._memory.add_region(MemoryRegion(0, mmap_size, 0, mmap_offset), fd)
        except OffloadError as exc:
            raise InflightRegionInvalid(f"cannot map the inflight region: {exc}") from exc
        self._block = inflight_queue_size(queue_size)
        self._queues: dict[int, InflightQueue] = {}

    def queue(self, index: int) -> InflightQueue:
        """The block for queue ``index`` (one ``InflightQueue`` per index, reused)."""
        if not 0 <= index < self.num_queues:
            raise InflightRegionInvalid(f"queue {index} not in a {self.num_queues}-queue region")
        found = self._queues.get(index)
        if found is None:
            view = self._memory.view(index * self._block, self._block)
            found = self._queues[index] = InflightQueue(view, self.queue_size)
        return found

    def close(self) -> None:
        self._queues.clear()
        self._memory.close()
