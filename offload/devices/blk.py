"""virtio-blk (OASIS virtio 1.2 §5.2): parse, then execute, then complete.

``process_queue`` pops every available chain and handles each in three steps
(vm-virtio / Firecracker style):

1. *parse*: the 16-byte header (type, reserved, sector) is read from the
   front of the readable buffers, the status byte is the last writable byte,
   and the data buffers are what lies between; no framing is assumed, so a
   header or status may share a descriptor with data.  The data stays a list
   of memoryviews into guest memory;
2. *execute*: IN/OUT go straight between those views and the volume with
   ``preadv``/``pwritev`` (zero-copy); FLUSH, GET_ID, DISCARD and
   WRITE_ZEROES as the spec says; anything else is UNSUPP;
3. *complete*: the status byte is written and (head, bytes written) queued;
   every ``completion_batch`` requests (16) and at the end of the drain the
   queued completions are pushed with one used.idx update, and after each
   push ``SplitQueue.signal_used`` interrupts the driver if it is waiting, so
   it reaps and refills while we keep draining (the two sides pipeline
   instead of taking turns); at the end of the drain that happens before
   kicks are re-armed.  The caller gets one notify decision for what is left
   unsignalled (everything, if the queue has no ``notifier``).

A malformed request never stops the loop: a header that is too short, data
in the wrong direction, a range past the capacity or a read-only volume
complete with IOERR when there is a writable status byte; without one the
chain is returned with used len 0.  A malformed descriptor chain
(``GuestDescriptorError``) is returned with used len 0.  Each case bumps a
counter in the queue's ``BlkStats``.  A broken ring (``GuestRingError``:
avail.idx jump, bad head, ring outside memory) marks the device
NEEDS_RESET and stops processing.

A drain handles at most ``DRAIN_BUDGET`` chains; past it the rest stays on
the ring and ``queue_timeout`` asks the worker to run the queue again in
``RERUN_DELAY_S`` (a guest can make a drain feed itself, see the constant).

QoS: with a limiter, the loop asks ``ready()`` before each pop and charges
the request after parsing; when throttled it leaves the rest on the ring and
``qos_delay()`` tells the server when to run the queue again.  Driver kicks
are suppressed while draining (``disable_kicks``); before returning the loop
re-enables them (avail_event with EVENT_IDX, clearing NO_NOTIFY without) and
re-checks the ring.

Asynchronous engines (``AsyncVolume``, RBD): IN, OUT, FLUSH, DISCARD and
WRITE_ZEROES are parsed and checked as above, then *submitted* with a
completion callback instead of executed; the chain stays popped (and marked
in the inflight region) while the engine works, so every request of every
ring can be in flight at once and they complete in any order.  The callback
runs on the engine's thread and only posts (head, status byte, used len,
start time, error) to the ring's ``CompletionChannel``; the ring's worker,
woken by the channel's eventfd (``queue_events``), writes the status byte,
counts, and pushes the completions at the top of ``process_queue``.  A request
is thus completed to the guest only after the engine completed it.  A ring
that stops (``quiesce_queue``) first waits for its requests in flight, so
none is lost and no engine thread writes into guest memory that is about to
be unmapped.  Requests still in flight after ``quiesce_timeout`` (60 s) are
abandoned: their channel is replaced, and they stay marked in the inflight
region for the ring's next start to resubmit.  Without writeback (no FLUSH
negotiated, or WCE cleared) a write completes only after the flush that
follows it.

An engine may also offer a non-blocking fast path (``try_preadv``/
``try_pwritev``: the file engine, ``offload.storage.file_engine``): a read,
or a write with writeback on, is tried there first after the checks, and if
the engine did it at once the request completes in this drain like a
synchronous one, with no completion channel; otherwise it is submitted.  So
requests complete out of order: one that waits in the engine's pool
completes after those behind it.

QoS limits may be swapped while the device runs (``qos`` is read at each
drain).  A throttled ring asks to be run again (``queue_timeout``: at least
1 ms, even if the bucket refilled in the meantime).

Polling mode (``poll_us``): after a drain the ring's thread keeps kicks off
and watches the avail ring and the completion channel for up to that long,
yielding the CPU (and the GIL) each turn, before re-enabling kicks.

IN and OUT are the hot path: ``_execute`` handles them first with the range
and QoS checks inlined (``_range``/``_charge`` serve the other types).

Counters are plain integers in one ``BlkStats`` per queue so that queue
threads never write shared state; ``stats()`` sums them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any

from offload.devices.base import DEFAULT_PROTOCOL_FEATURES, DeviceBackend
from offload.devices.completions import CompletionChannel
from offload.errors import GuestDescriptorError, GuestRingError, StorageError
from offload.storage.aio import is_async, join, then_flush
from offload.storage.qos import QosLimiter
from offload.storage.volume import AsyncVolume, IoDone, Volume
from offload.vhost_user.messages import ProtocolFeature
from offload.virtio import features as vf
from offload.virtio.chain import DescriptorChain
from offload.virtio.iov import gather, split_back, split_front
from offload.virtio.queue import SplitQueue

__all__ = [
    "BlkDevice",
    "BlkStats",
    "CONFIG",
    "SECTOR_SIZE",
    "S_IOERR",
    "S_OK",
    "S_UNSUPP",
    "T_DISCARD",
    "T_FLUSH",
    "T_GET_ID",
    "T_IN",
    "T_OUT",
    "T_WRITE_ZEROES",
]

SECTOR_SIZE = 512
T_IN = 0
T_OUT = 1
T_FLUSH = 4
T_GET_ID = 8
T_GET_LIFETIME = 10
T_DISCARD = 11
T_WRITE_ZEROES = 13
T_SECURE_ERASE = 14
S_OK = 0
S_IOERR = 1
S_UNSUPP = 2
ID_BYTES = 20
WZ_FLAG_UNMAP = 1
# Completions pushed (and the driver signalled, if it waits) every this many
# requests while draining; measured in docs/offload.md.
COMPLETION_BATCH = 16
# How long a stopping ring waits for its requests in flight.
QUIESCE_TIMEOUT = 60.0
# At most this many requests per process_queue call.  A guest can make a drain
# feed itself (a data buffer over the avail ring and the request's own header,
# reading sectors that hold the next avail.idx and sector): without a budget the
# ring's worker would never return to its stop flag.  The worker runs a queue
# that hit the budget again after RERUN_DELAY_S, without a kick.
DRAIN_BUDGET = 4096
RERUN_DELAY_S = 0.001

log = logging.getLogger(__name__)

HEADER = struct.Struct("<IIQ")  # type, reserved, sector
HEADER_SIZE = HEADER.size
_unpack_header = HEADER.unpack_from
SEGMENT = struct.Struct("<QII")  # sector, num_sectors, flags
# struct virtio_blk_config up to the secure-erase fields (72 bytes).
CONFIG = struct.Struct("<QII HBB I BBHI BBH IIIII B3x III")

_TYPE_NAMES = {
    T_IN: "in",
    T_OUT: "out",
    T_FLUSH: "flush",
    T_GET_ID: "get_id",
    T_DISCARD: "discard",
    T_WRITE_ZEROES: "write_zeroes",
}


#: upper bounds (ns) of the service-time histogram buckets; one more bucket is +Inf
LATENCY_BOUNDS_NS = (
    10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 10_000_000, 100_000_000,
)  # fmt: skip


@dataclass
class BlkStats:
    """Counters for one queue (summed across queues by ``BlkDevice.stats``).

    ``latency_buckets[i]`` counts requests whose service time (parse to
    completion, in the back-end) was at most ``LATENCY_BOUNDS_NS[i]`` and
    above the previous bound; the last bucket is everything slower."""

    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    read_bytes: int = 0
    write_bytes: int = 0
    latency_ns_sum: int = 0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_NS) + 1))

    def merge(self, other: BlkStats) -> None:
        self.requests.update(other.requests)
        self.errors.update(other.errors)
        self.read_bytes += other.read_bytes
        self.write_bytes += other.write_bytes
        self.latency_ns_sum += other.latency_ns_sum
        for i, n in enumerate(other.latency_buckets):
            self.latency_buckets[i] += n


#: an asynchronous completion: head, status byte, used len, start ns, error kind or ""
_Done = tuple[int, memoryview, int, int, str]
_ASYNC_TYPES = frozenset({T_IN, T_OUT, T_FLUSH, T_DISCARD, T_WRITE_ZEROES})
#: an engine's non-blocking attempt: (views, offset, length) -> done now?
_TryIo = Callable[[list[memoryview], int, int], bool]


class _Bad(Exception):
    """Internal: a request fails with ``status``; ``kind`` names the counter."""

    def __init__(self, status: int, kind: str) -> None:
        self.status = status
        self.kind = kind


class BlkDevice(DeviceBackend):
    """A virtio-blk device backed by one ``Volume``."""

    def __init__(
        self,
        volume: Volume,
        *,
        num_queues: int = 1,
        queue_size: int = 256,
        serial: str = "",
        blk_size: int = SECTOR_SIZE,
        size_max: int = 1 << 20,
        max_discard_sectors: int = 1 << 22,
        max_discard_seg: int = 32,
        max_write_zeroes_sectors: int = 1 << 22,
        max_write_zeroes_seg: int = 32,
        qos: QosLimiter | None = None,
        completion_batch: int = COMPLETION_BATCH,
        poll_us: int = 0,
    ) -> None:
        super().__init__(num_queues=num_queues, max_queue_size=queue_size)
        if blk_size < SECTOR_SIZE or blk_size & (blk_size - 1):
            raise ValueError(f"block size {blk_size} is not a power of 2 >= 512")
        self.volume = volume
        self.serial = serial.encode()[:ID_BYTES].ljust(ID_BYTES, b"\0")
        self.blk_size = blk_size
        self._blk_mask = blk_size - 1
        self.size_max = size_max
        self.seg_max = max(1, queue_size - 2)
        self.max_discard_sectors = max_discard_sectors
        self.max_discard_seg = max_discard_seg
        self.max_write_zeroes_sectors = max_write_zeroes_sectors
        self.max_write_zeroes_seg = max_write_zeroes_seg
        self.qos = qos
        if completion_batch < 1:
            raise ValueError(f"completion batch {completion_batch} is not positive")
        self.completion_batch = completion_batch
        self.writeback = True
        self.quiesce_timeout = QUIESCE_TIMEOUT
        self._queue_stats = [BlkStats() for _ in range(num_queues)]
        self._throttled = [False] * num_queues
        self._aio: AsyncVolume | None = volume if is_async(volume) else None  # type: ignore[assignment]
        self._channels: list[CompletionChannel[_Done]] | None = (
            None if self._aio is None else [CompletionChannel() for _ in range(num_queues)]
        )
        self._over_budget = [False] * num_queues
        self._try_read: _TryIo | None = getattr(volume, "try_preadv", None)
        self._try_write: _TryIo | None = getattr(volume, "try_pwritev", None)
        if poll_us < 0:
            raise ValueError(f"poll time {poll_us} us is negative")
        self.poll_ns = poll_us * 1000

    # -- negotiation and config -------------------------------------------

    def features(self) -> int:
        bits = (
            vf.VERSION_1,
            vf.RING_INDIRECT_DESC,
            vf.RING_EVENT_IDX,
            vf.BLK_SIZE_MAX,
            vf.BLK_SEG_MAX,
            vf.BLK_BLK_SIZE,
            vf.BLK_FLUSH,
            vf.BLK_TOPOLOGY,
            vf.BLK_CONFIG_WCE,
            vf.BLK_MQ,
            vf.BLK_DISCARD,
            vf.BLK_WRITE_ZEROES,
        )
        mask = sum(vf.bit(b) for b in bits)
        if self.volume.read_only:
            mask |= vf.bit(vf.BLK_RO)
        return mask

    def protocol_features(self) -> int:
        # Inflight tracking lets a restarted back-end resume the guest's requests.
        return DEFAULT_PROTOCOL_FEATURES | ProtocolFeature.INFLIGHT_SHMFD

    def ack_features(self, features: int) -> None:
        super().ack_features(features)
        # Without FLUSH the driver cannot ask for durability: write through.
        self.writeback = vf.has(self.acked_features, vf.BLK_FLUSH)

    def reset(self) -> None:
        super().reset()
        self.writeback = True

    @property
    def capacity(self) -> int:
        """Capacity in 512-byte sectors."""
        return self.volume.size // SECTOR_SIZE

    def config_bytes(self) -> bytes:
        sectors_per_block = self.blk_size // SECTOR_SIZE
        return CONFIG.pack(
            self.capacity,
            self.size_max,
            self.seg_max,
            0,  # geometry: cylinders, heads, sectors (not offered)
            0,
            0,
            self.blk_size,
            0,  # topology: physical_block_exp
            0,  # alignment_offset
            1,  # min_io_size (in logical blocks)
            0,  # opt_io_size
            int(self.writeback),
            0,  # unused0
            self.num_queues,
            self.max_discard_sectors,
            self.max_discard_seg,
            sectors_per_block,  # discard_sector_alignment
            self.max_write_zeroes_sectors,
            self.max_write_zeroes_seg,
            1,  # write_zeroes_may_unmap
            0,  # max_secure_erase_sectors (not offered)
            0,
            0,
        )

    def set_config(self, offset: int, data: bytes) -> None:
        """Only ``writeback`` (offset 32) is writable, and only with CONFIG_WCE."""
        if vf.has(self.acked_features, vf.BLK_CONFIG_WCE) and offset <= 32 < offset + len(data):
            self.writeback = bool(data[32 - offset])

    def resize(self, new_size_bytes: int) -> None:
        """Grow the volume online and tell the driver through a config interrupt."""
        self.volume.resize(new_size_bytes)
        self.notify_config_changed()

    # -- statistics and QoS -------------------------------------------------

    def stats(self) -> BlkStats:
        """Counters summed over every queue."""
        total = BlkStats()
        for s in self._queue_stats:
            total.merge(s)
        return total

    def qos_delay(self) -> float:
        """Seconds until a throttled queue should be run again (0: not throttled)."""
        return 0.0 if self.qos is None else self.qos.wait_time()

    def queue_timeout(self, index: int) -> float:
        """When to run a ring that left work on it again: at least RERUN_DELAY_S
        once throttled or over the drain budget.  The bucket may refill between
        the drain stopping and this question, and a 0 here would leave the ring
        asleep with work on it and kicks off."""
        if not (self._throttled[index] or self._over_budget[index]):
            return 0.0
        return max(self.qos_delay(), RERUN_DELAY_S)

    def queue_events(self, index: int) -> tuple[int, ...]:
        """An asynchronous engine's completions wake the ring's worker, while the
        ring has requests in flight (an idle ring's worker sleeps on its kick
        alone, and a wake-up skips the channel: no system call for it)."""
        if self._channels is None:
            return ()
        channel = self._channels[index]
        return (channel.fd,) if channel.in_flight else ()

    def in_flight(self) -> int:
        """Requests submitted to an asynchronous engine and not yet completed."""
        return 0 if self._channels is None else sum(c.in_flight for c in self._channels)

    def quiesce_queue(self, index: int, queue: SplitQueue) -> bool:
        """The ring stops: wait for its requests in flight and complete them."""
        if self._channels is None:
            return False
        channel = self._channels[index]
        done = channel.wait_idle(self.quiesce_timeout)
        if channel.in_flight:
            # Abandon them: their late completions go to a channel nobody reaps
            # (the guest views they write into keep the mapping alive), and they
            # stay marked in the inflight region, so the ring's next start
            # resubmits them rather than completing them twice.
            log.error("vq %d: %d request(s) still in flight after %.0fs: abandoned", index,
                      channel.in_flight, self.quiesce_timeout)  # fmt: skip
            self._channels[index] = CompletionChannel()
        if not done or self.needs_reset:
            return False
        try:
            queue.push_many(self._finish(done, self._queue_stats[index]))
        except GuestRingError as exc:
            log.error("vq %d: completions not returned: %s", index, exc)
            return False
        return queue.should_notify()

    def _finish(self, done: list[_Done], stats: BlkStats) -> list[tuple[int, int]]:
        """Status bytes and counters of reaped completions (worker thread)."""
        now = perf_counter_ns()
        latency = stats.latency_buckets
        out: list[tuple[int, int]] = []
        for head, status, used, started, error in done:
            if error:
                stats.errors[error] += 1
                status[0] = S_IOERR
                used = 1
            else:
                status[0] = S_OK
            took = now - started
            stats.latency_ns_sum += took
            latency[bisect_left(LATENCY_BOUNDS_NS, took)] += 1
            out.append((head, used))
        return out

    # -- the data path --------------------------------------------------------

    def process_queue(self, index: int, queue: SplitQueue) -> bool:
        if self.needs_reset:
            return False
        stats = self._queue_stats[index]
        qos = self.qos
        pop = queue.pop
        handle = self._handle
        clock = perf_counter_ns
        latency = stats.latency_buckets
        flush_at = self.completion_batch
        if flush_at > queue.size:
            flush_at = queue.size
        completions: list[tuple[int, int]] = []
        append = completions.append
        channel = None if self._channels is None else self._channels[index]
        budget = DRAIN_BUDGET
        self._over_budget[index] = False
        throttled = False
        try:
            if channel is not None and channel.in_flight:
                reaped = channel.reap()
                if reaped:
                    queue.push_many(self._finish(reaped, stats))
                    queue.signal_used()
            queue.disable_kicks()
            while True:
                throttled = False
                while True:
                    if len(completions) >= flush_at:
                        # Completions go back while we keep draining, and a driver
                        # waiting for them is signalled now (pipelining).
                        queue.push_many(completions)
                        completions.clear()
                        queue.signal_used()
                    if qos is not None and not qos.ready():
                        throttled = True
                        break
                    if budget <= 0:  # see DRAIN_BUDGET
                        self._over_budget[index] = throttled = True
                        break
                    budget -= 1
                    try:
                        chain = pop()
                    except GuestDescriptorError as exc:
                        stats.errors["chain"] += 1
                        append((exc.head, 0))
                        continue
                    if chain is None:
                        break
                    started = clock()
                    done = handle(chain, stats, channel)
                    if done is None:
                        continue  # submitted: the engine completes it
                    append(done)
                    took = clock() - started  # service time, parse to completion
                    stats.latency_ns_sum += took
                    latency[bisect_left(LATENCY_BOUNDS_NS, took)] += 1
                if completions:
                    queue.push_many(completions)
                    completions.clear()
                    queue.signal_used()  # before re-arming: the driver wakes sooner
                if throttled:
                    break
                if self.poll_ns and self._spin(queue, channel, stats):
                    continue  # kicks still off: the driver need not kick
                queue.enable_kicks()
                if not queue.has_available():
                    break
                queue.disable_kicks()
            self._throttled[index] = throttled
            if channel is not None and channel.in_flight:
                channel.arm()
            return queue.should_notify()
        except GuestRingError as exc:
            stats.errors["ring"] += 1
            self.mark_needs_reset(str(exc))
            if completions:
                with contextlib.suppress(GuestRingError):
                    queue.push_many(completions)
            return False

    def _spin(
        self, queue: SplitQueue, channel: CompletionChannel[_Done] | None, stats: BlkStats
    ) -> bool:
        """Polling mode: watch the ring (and the engine's completions) for up to
        ``poll_ns`` with kicks off; True when there is work again.

        Each turn yields the CPU (``sched_yield`` releases the GIL, so the other
        rings' threads and the engine's pool run while this one spins).
        """
        deadline = perf_counter_ns() + self.poll_ns
        while perf_counter_ns() < deadline:
            if queue.has_available():
                return True
            if channel is not None and channel.pending():
                queue.push_many(self._finish(channel.reap(), stats))
                queue.signal_used()
                deadline = perf_counter_ns() + self.poll_ns
            os.sched_yield()
        return False

    def _handle(
        self,
        chain: DescriptorChain,
        stats: BlkStats,
        channel: CompletionChannel[_Done] | None = None,
    ) -> tuple[int, int] | None:
        """Parse, execute and complete one request; returns (head, used len).

        With a ``channel`` (an asynchronous engine) a data request is submitted
        instead and None is returned: its completion arrives on the channel.
        """
        writable = chain.writable
        if not writable:
            stats.errors["no_status"] += 1
            return chain.head, 0
        status = writable[-1]
        if status.nbytes == 1:
            data_in = writable[:-1]
        else:
            data_in, tail = split_back(writable, 1)
            status = tail[0]
        try:
            if chain.readable_len < HEADER_SIZE:
                raise _Bad(S_IOERR, "header")
            first = chain.readable[0]
            if first.nbytes >= HEADER_SIZE:
                rtype, _, sector = _unpack_header(first)
            else:
                rtype, _, sector = HEADER.unpack(gather(split_front(chain.readable, 16)[0]))
            stats.requests[_TYPE_NAMES.get(rtype, "unsupported")] += 1
            if channel is not None and rtype in _ASYNC_TYPES:
                done = self._submit(rtype, sector, chain, data_in, status, stats, channel)
                if done is None:
                    return None
                written = done
            else:
                written = self._execute(rtype, sector, chain, data_in, stats)
            status[0] = S_OK
        except _Bad as bad:
            stats.errors[bad.kind] += 1
            status[0] = bad.status
            written = 0
        return chain.head, written + 1

    def _execute(
        self,
        rtype: int,
        sector: int,
        chain: DescriptorChain,
        data_in: list[memoryview],
        stats: BlkStats,
    ) -> int:
        """Run one parsed request; returns data bytes written to the guest."""
        volume = self.volume
        try:
            if rtype == T_IN:  # _range and _charge inlined: the hot path
                if chain.readable_len != HEADER_SIZE:
                    raise _Bad(S_IOERR, "direction")
                length = chain.writable_len - 1
                offset = sector * SECTOR_SIZE
                if offset & self._blk_mask or length & self._blk_mask:
                    raise _Bad(S_IOERR, "range")
                if offset + length > volume.size:
                    raise _Bad(S_IOERR, "range")
                if self.qos is not None:
                    self.qos.consume(1, length)
                volume.preadv(data_in, offset)
                stats.read_bytes += length
                return length
            if rtype == T_OUT:
                if chain.writable_len != 1:
                    raise _Bad(S_IOERR, "direction")
                if volume.read_only:
                    raise _Bad(S_IOERR, "read_only")
                length = chain.readable_len - HEADER_SIZE
                offset = sector * SECTOR_SIZE
                if offset & self._blk_mask or length & self._blk_mask:
                    raise _Bad(S_IOERR, "range")
                if offset + length > volume.size:
                    raise _Bad(S_IOERR, "range")
                if self.qos is not None:
                    self.qos.consume(1, length)
                volume.pwritev(self._data_out(chain), offset)
                if not self.writeback:
                    volume.flush()
                stats.write_bytes += length
                return 0
            if rtype == T_FLUSH:
                self._charge(0)
                volume.flush()
                return 0
            if rtype == T_GET_ID:
                return self._get_id(data_in)
            if rtype in (T_DISCARD, T_WRITE_ZEROES):
                self._discard_or_zero(rtype, chain)
                return 0
        except StorageError as exc:
            raise _Bad(S_IOERR, "io") from exc
        raise _Bad(S_UNSUPP, "unsupported")

    def _range(self, sector: int, length: int) -> int:
        """Byte offset of a data transfer, after alignment and capacity checks."""
        offset = sector * SECTOR_SIZE
        mask = self._blk_mask
        if offset & mask or length & mask or offset + length > self.volume.size:
            raise _Bad(S_IOERR, "range")
        return offset

    def _charge(self, nbytes: int) -> None:
        if self.qos is not None:
            self.qos.consume(1, nbytes)

    @staticmethod
    def _data_out(chain: DescriptorChain) -> list[memoryview]:
        readable = chain.readable
        if readable[0].nbytes == HEADER.size:
            return readable[1:]
        return split_front(readable, HEADER.size)[1]

    def _get_id(self, data_in: list[memoryview]) -> int:
        remaining = memoryview(self.serial)
        for view in data_in:
            n = min(view.nbytes, remaining.nbytes)
            view[:n] = remaining[:n]
            remaining = remaining[n:]
            if not remaining.nbytes:
                break
        return ID_BYTES - remaining.nbytes

    def _discard_or_zero(self, rtype: int, chain: DescriptorChain) -> None:
        for offset, length, unmap in self._zero_ranges(rtype, chain):
            self._charge(length)
            if rtype == T_DISCARD:
                self.volume.discard(offset, length)
            else:
                self.volume.write_zeroes(offset, length, unmap)

    def _zero_ranges(self, rtype: int, chain: DescriptorChain) -> list[tuple[int, int, bool]]:
        """The checked (offset, length, unmap) segments of a DISCARD or WRITE_ZEROES."""
        discard = rtype == T_DISCARD
        feature = vf.BLK_DISCARD if discard else vf.BLK_WRITE_ZEROES
        if not vf.has(self.acked_features, feature):
            raise _Bad(S_UNSUPP, "unsupported")
        if self.volume.read_only:
            raise _Bad(S_IOERR, "read_only")
        if chain.writable_len != 1:
            raise _Bad(S_IOERR, "direction")
        payload_len = chain.readable_len - HEADER.size
        nseg, rest = divmod(payload_len, SEGMENT.size)
        max_seg = self.max_discard_seg if discard else self.max_write_zeroes_seg
        max_sectors = self.max_discard_sectors if discard else self.max_write_zeroes_sectors
        if rest or not 0 < nseg <= max_seg:
            raise _Bad(S_IOERR, "segments")
        payload = gather(self._data_out(chain))
        ranges: list[tuple[int, int, bool]] = []
        for sector, num, flags in SEGMENT.iter_unpack(payload):
            if flags & ~WZ_FLAG_UNMAP or (discard and flags):
                raise _Bad(S_UNSUPP, "flags")
            if num > max_sectors:
                raise _Bad(S_IOERR, "segments")
            ranges.append((self._range(sector, num * SECTOR_SIZE), num * SECTOR_SIZE, bool(flags)))
        return ranges

    # -- the asynchronous path ------------------------------------------------

    def _submit(
        self,
        rtype: int,
        sector: int,
        chain: DescriptorChain,
        data_in: list[memoryview],
        status: memoryview,
        stats: BlkStats,
        channel: CompletionChannel[_Done],
    ) -> int | None:
        """Check a data request as ``_execute`` does, then hand it to the engine.

        An engine with a non-blocking fast path (``try_preadv``/``try_pwritev``,
        the file engine) may finish a read or write here: then the data bytes
        written to the guest are returned and nothing was submitted.  None: the
        engine completes the request through ``channel``.
        """
        aio = self._aio
        assert aio is not None
        head = chain.head
        started = perf_counter_ns()
        post = channel.post

        def completion(used: int) -> IoDone:
            def done(error: StorageError | None) -> None:
                post((head, status, used, started, "" if error is None else "io"))

            return done

        if rtype == T_IN:
            if chain.readable_len != HEADER_SIZE:
                raise _Bad(S_IOERR, "direction")
            length = chain.writable_len - 1
            offset = self._range(sector, length)
            self._charge(length)
            stats.read_bytes += length
            if self._try_read is not None and self._try_read(data_in, offset, length):
                return length
            channel.submitted += 1
            self._start(aio.aio_preadv, data_in, offset, completion(length + 1))
            return None
        if rtype == T_FLUSH:
            self._charge(0)
            channel.submitted += 1
            self._start(aio.aio_flush, completion(1))
            return None
        if rtype == T_OUT:
            if chain.writable_len != 1:
                raise _Bad(S_IOERR, "direction")
            if aio.read_only:
                raise _Bad(S_IOERR, "read_only")
            length = chain.readable_len - HEADER_SIZE
            offset = self._range(sector, length)
            self._charge(length)
            stats.write_bytes += length
            data_out = self._data_out(chain)
            if (
                self.writeback
                and self._try_write is not None
                and self._try_write(data_out, offset, length)
            ):
                return 0
            written = completion(1)
            if not self.writeback:
                written = then_flush(aio, written)
            channel.submitted += 1
            self._start(aio.aio_pwritev, data_out, offset, written)
            return None
        ranges = self._zero_ranges(rtype, chain)
        for _, length, _ in ranges:
            self._charge(length)
        done = join(len(ranges), completion(1))
        channel.submitted += 1
        for offset, length, unmap in ranges:
            if rtype == T_DISCARD:
                self._start(aio.aio_discard, offset, length, done)
            else:
                self._start(aio.aio_write_zeroes, offset, length, unmap, done)
        return None

    @staticmethod
    def _start(fn: Callable[..., None], *args: Any) -> None:
        """Call an engine's submit function (its last argument is the callback).

        A refusal (the engine raised before the request started, so the
        callback will never run) completes the request as failed here.
        """
        try:
            fn(*args)
        except StorageError as exc:
            args[-1](exc)
