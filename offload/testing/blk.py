"""virtio-blk requests (virtio 1.2 section 5.2) driven over one split virtqueue.

A :class:`BlkQueue` owns a :class:`SplitQueueDriver`, its kick and call
eventfds and ``depth`` request slots, each with a preallocated 16-byte header
and a status byte in region 0 and a ``max_io`` data buffer in the last
region of guest memory.  A request is header (device-readable), data
(readable for OUT, segments for DISCARD/WRITE_ZEROES; writable for IN and
GET_ID), status (writable, preset to 0xFF so an untouched byte shows).  The
batch API (:meth:`BlkQueue.run`) submits up to ``depth`` requests, kicks
once, waits on the call eventfd and harvests; the fast path
(:meth:`BlkQueue.submit_io` / :meth:`BlkQueue.wait`) copies nothing and is
what the benchmark uses.  One :class:`BlkQueue` belongs to one thread;
different queues may be driven from different threads, or from one thread
with :func:`wait_any`, which polls every queue's call eventfd at once.
"""

from __future__ import annotations

import contextlib
import enum
import os
import select
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from offload.testing.errors import FrontendTimeout, QueueFull
from offload.testing.ring import Segment, SplitQueueDriver

__all__ = [
    "BLK_ID_BYTES",
    "SECTOR_SIZE",
    "WRITE_ZEROES_FLAG_UNMAP",
    "BlkConfig",
    "BlkFeature",
    "BlkQueue",
    "BlkRequest",
    "BlkResult",
    "BlkStatus",
    "BlkType",
    "wait_any",
]


class BlkFeature(enum.IntEnum):
    """virtio-blk feature bits (virtio 1.2 section 5.2.3)."""

    SIZE_MAX = 1
    SEG_MAX = 2
    GEOMETRY = 4
    RO = 5
    BLK_SIZE = 6
    FLUSH = 9
    TOPOLOGY = 10
    CONFIG_WCE = 11
    MQ = 12
    DISCARD = 13
    WRITE_ZEROES = 14


class BlkType(enum.IntEnum):
    """virtio-blk request types."""

    IN = 0
    OUT = 1
    FLUSH = 4
    GET_ID = 8
    DISCARD = 11
    WRITE_ZEROES = 13


class BlkStatus(enum.IntEnum):
    """virtio-blk status byte values."""

    OK = 0
    IOERR = 1
    UNSUPP = 2


SECTOR_SIZE = 512
BLK_ID_BYTES = 20
WRITE_ZEROES_FLAG_UNMAP = 1

_BLK_HDR = struct.Struct("<IIQ")  # type, reserved, sector
_BLK_SEG = struct.Struct("<QII")  # sector, num_sectors, flags


@dataclass(frozen=True)
class BlkConfig:
    """struct virtio_blk_config (virtio 1.2 section 5.2.4), the first 60 bytes."""

    capacity: int
    size_max: int
    seg_max: int
    cylinders: int
    heads: int
    sectors: int
    blk_size: int
    physical_block_exp: int
    alignment_offset: int
    min_io_size: int
    opt_io_size: int
    writeback: int
    num_queues: int
    max_discard_sectors: int
    max_discard_seg: int
    discard_sector_alignment: int
    max_write_zeroes_sectors: int
    max_write_zeroes_seg: int
    write_zeroes_may_unmap: int

    SIZE = 60
    _FMT = struct.Struct("<QIIHBBIBBHIBxHIIIIIB3x")

    @classmethod
    def parse(cls, data: bytes) -> BlkConfig:
        if len(data) < cls.SIZE:
            data = data + bytes(cls.SIZE - len(data))
        return cls(*cls._FMT.unpack_from(data))


@dataclass(frozen=True)
class BlkRequest:
    """One virtio-blk request to submit.

    ``data`` is the OUT payload; ``length`` the IN size; ``ranges`` the
    (sector, num_sectors, flags) segments of DISCARD/WRITE_ZEROES.  ``split``
    cuts the data buffer into that many descriptors (scatter-gather).
    """

    type: int  # a BlkType, or any number to probe the device with
    sector: int = 0
    data: bytes = b""
    length: int = 0
    ranges: tuple[tuple[int, int, int], ...] = ()
    split: int = 1

    @classmethod
    def read(cls, sector: int, length: int, *, split: int = 1) -> BlkRequest:
        return cls(BlkType.IN, sector=sector, length=length, split=split)

    @classmethod
    def write(cls, sector: int, data: bytes, *, split: int = 1) -> BlkRequest:
        return cls(BlkType.OUT, sector=sector, data=data, split=split)

    @classmethod
    def flush(cls) -> BlkRequest:
        return cls(BlkType.FLUSH)

    @classmethod
    def get_id(cls) -> BlkRequest:
        return cls(BlkType.GET_ID, length=BLK_ID_BYTES)

    @classmethod
    def discard(cls, sector: int, num_sectors: int) -> BlkRequest:
        return cls(BlkType.DISCARD, ranges=((sector, num_sectors, 0),))

    @classmethod
    def write_zeroes(cls, sector: int, num_sectors: int, *, unmap: bool = False) -> BlkRequest:
        flags = WRITE_ZEROES_FLAG_UNMAP if unmap else 0
        return cls(BlkType.WRITE_ZEROES, ranges=((sector, num_sectors, flags),))


@dataclass(frozen=True)
class BlkResult:
    """What came back: the status byte, bytes the device wrote, and used.len."""

    status: int
    data: bytes
    used_len: int


@dataclass
class _Slot:
    index: int
    hdr_gpa: int
    hdr_off: int
    status_gpa: int
    status_off: int
    data_gpa: int
    data_off: int
    in_len: int = 0  # device-writable data bytes of the request in flight


class BlkQueue:
    """virtio-blk requests over one :class:`SplitQueueDriver` and its two eventfds."""

    def __init__(
        self,
        index: int,
        vq: SplitQueueDriver,
        *,
        depth: int,
        max_io: int,
        timeout: float,
        blocking_eventfds: bool = False,
    ) -> None:
        self.index = index
        self.vq = vq
        self.depth = depth
        self.max_io = max_io
        self.timeout = timeout
        mem = vq.mem
        self._buf = mem.view
        # QEMU hands out non-blocking eventfds; blocking ones check that a
        # back-end does not depend on the front-end's file status flags.
        efd_flags = os.EFD_CLOEXEC | (0 if blocking_eventfds else os.EFD_NONBLOCK)
        self.kick_fd = os.eventfd(0, efd_flags)
        self.call_fd = os.eventfd(0, efd_flags)
        self.kicks = 0
        self.interrupts = 0
        self._slots: list[_Slot] = []
        for i in range(depth):
            hdr = mem.alloc(_BLK_HDR.size, align=16, region=0)
            status = mem.alloc(1, align=1, region=0)
            data = mem.alloc(max_io, align=4096, region=len(mem.regions) - 1)
            self._slots.append(
                _Slot(
                    index=i,
                    hdr_gpa=hdr,
                    hdr_off=mem.offset(hdr, _BLK_HDR.size),
                    status_gpa=status,
                    status_off=mem.offset(status),
                    data_gpa=data,
                    data_off=mem.offset(data, max_io),
                )
            )
        self._free_slots: list[int] = list(range(depth - 1, -1, -1))
        self._poller = select.poll()
        self._poller.register(self.call_fd, select.POLLIN)

    # -- slot buffers (fast path) ----------------------------------------------------------
    @property
    def free_slots(self) -> int:
        return len(self._free_slots)

    def slot_buffer(self, slot: int) -> memoryview:
        """Writable view of a slot's data buffer (prefill write data here)."""
        s = self._slots[slot]
        return memoryview(self._buf)[s.data_off : s.data_off + self.max_io]

    def submit_io(self, write: bool, sector: int, nbytes: int) -> int:
        """Queue an IN/OUT of *nbytes* at *sector* using a slot's own buffer; returns the slot.

        Nothing is copied: OUT sends whatever the slot buffer holds.  Call
        :meth:`kick` after a batch.
        """
        slot = self._free_slots.pop() if self._free_slots else self._no_slot()
        s = self._slots[slot]
        buf = self._buf
        _BLK_HDR.pack_into(buf, s.hdr_off, 1 if write else 0, 0, sector)
        buf[s.status_off] = 0xFF
        try:
            self.vq.add(
                (
                    (s.hdr_gpa, 16, False),
                    (s.data_gpa, nbytes, not write),
                    (s.status_gpa, 1, True),
                ),
                slot,
            )
        except QueueFull:
            self._free_slots.append(slot)
            raise
        return slot

    def _no_slot(self) -> int:
        raise QueueFull(f"all {self.depth} request slots of queue {self.index} in flight")

    def submit(self, req: BlkRequest) -> int:
        """Queue any request (payload copied into the slot buffer); returns the slot."""
        if not self._free_slots:
            self._no_slot()
        slot = self._free_slots[-1]
        s = self._slots[slot]
        buf = self._buf
        segs: list[Segment] = [(s.hdr_gpa, 16, False)]
        in_len = 0
        rtype = int(req.type)
        if req.type in (BlkType.DISCARD, BlkType.WRITE_ZEROES):
            payload = b"".join(_BLK_SEG.pack(*r) for r in req.ranges)
            self._check_len(len(payload))
            buf[s.data_off : s.data_off + len(payload)] = payload
            segs.append((s.data_gpa, len(payload), False))
        elif req.type == BlkType.OUT or req.data:
            self._check_len(len(req.data))
            buf[s.data_off : s.data_off + len(req.data)] = req.data
            segs.extend(self._split(s.data_gpa, len(req.data), req.split, False))
        elif req.length:
            self._check_len(req.length)
            buf[s.data_off : s.data_off + req.length] = bytes(req.length)
            segs.extend(self._split(s.data_gpa, req.length, req.split, True))
            in_len = req.length
        segs.append((s.status_gpa, 1, True))
        _BLK_HDR.pack_into(buf, s.hdr_off, rtype, 0, req.sector)
        buf[s.status_off] = 0xFF
        self.vq.add(segs, slot)
        self._free_slots.pop()
        s.in_len = in_len
        return slot

    def _check_len(self, n: int) -> None:
        if n > self.max_io:
            raise ValueError(f"{n} bytes exceed the slot buffer ({self.max_io})")

    @staticmethod
    def _split(gpa: int, length: int, parts: int, writable: bool) -> list[Segment]:
        parts = max(1, min(parts, length))
        step = -(-length // parts)
        return [(gpa + o, min(step, length - o), writable) for o in range(0, length, step)]

    def kick(self) -> None:
        """Publish everything submitted; write the kick eventfd if the device wants it."""
        if self.vq.publish():
            os.eventfd_write(self.kick_fd, 1)
            self.kicks += 1

    # -- completion ------------------------------------------------------------------------
    def reap(self) -> list[tuple[int, int]]:
        """Completed (slot, status) pairs, without waiting; their slots are free again."""
        done = self.vq.harvest()
        if not done:
            return []
        buf = self._buf
        slots = self._slots
        free = self._free_slots
        out: list[tuple[int, int]] = []
        for slot, _used in done:
            out.append((slot, buf[slots[slot].status_off]))
            free.append(slot)
        return out

    def reap_full(self) -> list[tuple[int, BlkResult]]:
        """Like :meth:`reap` but with the device-written data and used.len."""
        done = self.vq.harvest()
        buf = self._buf
        out: list[tuple[int, BlkResult]] = []
        for slot, used_len in done:
            s = self._slots[slot]
            data = buf[s.data_off : s.data_off + s.in_len] if s.in_len else b""
            out.append((slot, BlkResult(status=buf[s.status_off], data=data, used_len=used_len)))
            self._free_slots.append(slot)
        return out

    def wait_interrupt(self, timeout: float) -> bool:
        """Sleep until the call eventfd fires or completions are already there."""
        if self.vq.arm():
            return True
        if not self._poller.poll(int(timeout * 1000)):
            return False
        os.eventfd_read(self.call_fd)
        self.interrupts += 1
        return True

    def wait(self, timeout: float | None = None) -> list[tuple[int, int]]:
        """Completed (slot, status) pairs; blocks until at least one arrives."""
        done = self.reap()
        if done:
            return done
        if not self.vq.in_flight:
            return []
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.wait_interrupt(left):
                raise FrontendTimeout(
                    f"queue {self.index}: no completion in {limit}s ({self.vq.describe()})"
                )
            done = self.reap()
            if done:
                return done

    def _wait_full(self, deadline: float) -> list[tuple[int, BlkResult]]:
        while True:
            done = self.reap_full()
            if done:
                return done
            left = deadline - time.monotonic()
            if left <= 0 or not self.wait_interrupt(left):
                raise FrontendTimeout(
                    f"queue {self.index}: no completion in time ({self.vq.describe()})"
                )

    # -- batch API -------------------------------------------------------------------------
    def run(self, requests: Iterable[BlkRequest]) -> list[BlkResult]:
        """Submit every request (up to ``depth`` at a time, one kick per batch), in order."""
        pending = list(requests)
        results: list[BlkResult | None] = [None] * len(pending)
        slot_to_req: dict[int, int] = {}
        nxt = 0
        deadline = time.monotonic() + self.timeout + 0.01 * len(pending)
        while nxt < len(pending) or slot_to_req:
            submitted = False
            while nxt < len(pending) and self._free_slots:
                req = pending[nxt]
                need = self.vq.descriptors_needed(2 + max(1, req.split))
                if self.vq.num_free < need:
                    break
                slot_to_req[self.submit(req)] = nxt
                nxt += 1
                submitted = True
            if submitted:
                self.kick()
            if not slot_to_req:
                raise QueueFull("a request needs more descriptors than the queue has")
            for slot, res in self._wait_full(deadline):
                results[slot_to_req.pop(slot)] = res
        return [r for r in results if r is not None]

    def execute(self, req: BlkRequest) -> BlkResult:
        return self.run([req])[0]

    def read(self, sector: int, length: int) -> BlkResult:
        return self.execute(BlkRequest.read(sector, length))

    def write(self, sector: int, data: bytes) -> BlkResult:
        return self.execute(BlkRequest.write(sector, data))

    def flush(self) -> BlkResult:
        return self.execute(BlkRequest.flush())

    def get_id(self) -> BlkResult:
        return self.execute(BlkRequest.get_id())

    def discard(self, sector: int, num_sectors: int) -> BlkResult:
        return self.execute(BlkRequest.discard(sector, num_sectors))

    def write_zeroes(self, sector: int, num_sectors: int, *, unmap: bool = False) -> BlkResult:
        return self.execute(BlkRequest.write_zeroes(sector, num_sectors, unmap=unmap))

    def close(self) -> None:
        for fd in (self.kick_fd, self.call_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.kick_fd = self.call_fd = -1


def wait_any(queues: Sequence[BlkQueue], timeout: float) -> list[tuple[BlkQueue, int, int]]:
    """Completions from several queues driven by one thread: (queue, slot, status)."""
    out = _reap_all(queues)
    if out:
        return out
    if not any(q.vq.in_flight for q in queues):
        return []
    poller = select.poll()
    by_fd: dict[int, BlkQueue] = {}
    for q in queues:
        if q.vq.in_flight:
            if q.vq.arm():
                return _reap_all(queues)
            poller.register(q.call_fd, select.POLLIN)
            by_fd[q.call_fd] = q
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        events = poller.poll(max(0, int(left * 1000))) if left > 0 else []
        if not events:
            raise FrontendTimeout(f"no completion on {len(by_fd)} queues in {timeout}s")
        for fd, _ in events:
            os.eventfd_read(fd)
            by_fd[fd].interrupts += 1
        out = _reap_all(queues)
        if out:
            return out


def _reap_all(queues: Sequence[BlkQueue]) -> list[tuple[BlkQueue, int, int]]:
    return [(q, slot, st) for q in queues for slot, st in q.reap()]
