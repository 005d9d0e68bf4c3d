"""virtio-net (OASIS virtio 1.2 §5.1) between guest rings and a TAP: parse, execute, complete.

Queues: ring ``2i`` receives (RX) and ring ``2i+1`` transmits (TX) for queue
pair ``i``; pair ``i`` reads and writes the TAP's fd ``i`` (a multi-queue TAP
when there are several pairs).  There is no control queue: with a
``vhost-user`` netdev QEMU keeps the control virtqueue, the config space
(MAC, link status, ``max_virtqueue_pairs``) and the MAC/VLAN/RX filters to
itself and hands the back-end only the data rings.  The config struct here
serves other front-ends (the test driver in ``offload.testing``).

Every frame carries the 12-byte ``virtio_net_hdr_v1`` (VERSION_1 is required).
No checksum or segmentation offload is offered, so a TX header must be all
zero (flags, gso_type) and an RX header is written as zeros plus
``num_buffers``; the TAP is opened without ``IFF_VNET_HDR`` and gives and takes
plain, complete ethernet frames.

TX (``_process_tx``), per chain: *parse* the header and the frame from the
readable buffers (a writable buffer, a short or oversized frame, or offload
flags we never offered make the chain malformed); *execute*: the NIC hook
(``classify_tx``) decides FORWARD (one ``os.write`` to the TAP), CONSUMED (a
card service answered) or DROP (spoofing); *complete* with used len 0.  A TAP
that is full (EAGAIN) or down drops the frame; every outcome is counted.

RX (``_process_rx``), per frame: frames come first from the hook's
``deliver`` queue (pair 0 only), then from the TAP.  *Parse*: pop chains until
their writable bytes hold header + frame (one chain without MRG_RXBUF; as many
as needed with it); a chain with readable buffers or no room is malformed and
returned with used len 0.  If the ring runs dry mid-frame the popped chains
are given back by rewinding ``last_avail_idx`` and the frame waits (``pending``)
for the driver to add buffers; the ring is then *starved*: ``queue_events``
stops naming the TAP (a readable TAP must not spin the worker) and kicks are
re-armed so the driver's next buffer wakes us.  Without MRG_RXBUF a frame that
does not fit one chain is dropped (counted) and the chain kept.  *Execute*:
header (``num_buffers`` = chains used) and frame are copied into the views;
*complete*: one used element per chain with the bytes it received, pushed
every ``COMPLETION_BATCH`` frames and at the end.  At most ``RX_BUDGET``
frames per call, so a flooding TAP cannot hold a ring's worker forever.

A broken ring (``GuestRingError``) marks the device NEEDS_RESET; a broken
chain (``GuestDescriptorError``) is returned with used len 0 and counted.
Disabled rings (SET_VRING_ENABLE 0) are not processed.  Counters live in one
``NetStats`` per queue (each ring has one thread); ``stats()`` sums them.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import struct
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from offload.devices.base import DeviceBackend
from offload.errors import GuestDescriptorError, GuestRingError
from offload.network.hook import ForwardAll, NicHook, TxVerdict
from offload.vhost_user.messages import ProtocolFeature
from offload.virtio import features as vf
from offload.virtio.chain import DescriptorChain
from offload.virtio.iov import gather, split_front
from offload.virtio.queue import SplitQueue

__all__ = ["CONFIG", "HDR_LEN", "NetDevice", "NetStats", "S_LINK_UP"]

log = logging.getLogger(__name__)

HDR_LEN: Final = 12  # struct virtio_net_hdr_v1
_HDR = struct.Struct(
    "<BBHHHHH"
)  # flags, gso_type, hdr_len, gso_size, csum_start/offset, num_buffers
_HDR_START = struct.Struct("<BB")
_HDR_ONE_BUFFER: Final = _HDR.pack(0, 0, 0, 0, 0, 0, 1)  # an RX header, num_buffers = 1
S_LINK_UP: Final = 1
# struct virtio_net_config up to duplex: mac, status, max_virtqueue_pairs, mtu, speed, duplex.
CONFIG: Final = struct.Struct("<6sHHHIB")
ETH_HLEN: Final = 14
VLAN_HLEN: Final = 4
MAX_TAP_FRAME: Final = 65536
RX_BUDGET: Final = 256
COMPLETION_BATCH: Final = 16
MAX_INJECTED: Final = 256
SPEED_UNKNOWN: Final = 0xFFFFFFFF
DUPLEX_UNKNOWN: Final = 0xFF
# What QEMU's vhost-user netdev needs and nothing it could misuse: no CONFIG
# (QEMU owns virtio-net's config space and masks CONFIG for net anyway), no
# BACKEND_REQ (no back-end channel, so nothing ever arrives on it while QEMU
# waits for a reply), no INFLIGHT_SHMFD (QEMU never sets it up for net), and
# STATUS is not implemented.  docs/offload.md has the QEMU 7.2 notes.
PROTOCOL_FEATURES: Final = int(
    ProtocolFeature.MQ | ProtocolFeature.REPLY_ACK | ProtocolFeature.CONFIGURE_MEM_SLOTS
)


@dataclass
class NetStats:
    """Counters for one ring (summed by ``NetDevice.stats``)."""

    frames: int = 0
    bytes: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def merge(self, other: NetStats) -> None:
        self.frames += other.frames
        self.bytes += other.bytes
        self.verdicts.update(other.verdicts)
        self.dropped.update(other.dropped)
        self.errors.update(other.errors)


@dataclass
class _RxState:
    pending: bytes | None = None
    starved: bool = False
    scratch: list[bytearray] = field(default_factory=lambda: [bytearray(MAX_TAP_FRAME)])
    scratch_view: memoryview = field(init=False)

    def __post_init__(self) -> None:
        self.scratch_view = memoryview(self.scratch[0])


class NetDevice(DeviceBackend):
    """A virtio-net device whose queue pair ``i`` is served through ``tap_fds[i]``."""

    def __init__(
        self,
        *,
        mac: bytes,
        tap_fds: Sequence[int],
        mtu: int = 1500,
        hook: NicHook | None = None,
        queue_size: int = 1024,
        link_up: bool = True,
    ) -> None:
        pairs = len(tap_fds)
        if pairs < 1:
            raise ValueError("a net device needs at least one TAP fd")
        if len(mac) != 6:
            raise ValueError(f"MAC of {len(mac)} bytes")
        if not 68 <= mtu <= 65535 - ETH_HLEN - VLAN_HLEN:
            raise ValueError(f"MTU {mtu} is outside 68..65517")
        super().__init__(num_queues=2 * pairs, max_queue_size=queue_size)
        self.mac = bytes(mac)
        self.mtu = mtu
        self.max_frame = max(mtu, 1500) + ETH_HLEN + VLAN_HLEN
        self.tap_fds = list(tap_fds)
        self.pairs = pairs
        self.link_up = link_up
        self.hook: NicHook = hook if hook is not None else ForwardAll()
        self._stats = [NetStats() for _ in range(2 * pairs)]
        self._rx = [_RxState() for _ in range(pairs)]
        self._injected: collections.deque[bytes] = collections.deque()
        self._inject_lock = threading.Lock()
        self._inject_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.hook.attach(self.deliver)

    def close(self) -> None:
        """Release the injection eventfd (the TAP fds belong to the caller)."""
        fd, self._inject_fd = self._inject_fd, -1
        if fd >= 0:
            os.close(fd)

    # -- negotiation and config -------------------------------------------

    def features(self) -> int:
        bits = [
            vf.VERSION_1,
            vf.RING_INDIRECT_DESC,
            vf.RING_EVENT_IDX,
            vf.NET_MRG_RXBUF,
            vf.NET_MAC,
            vf.NET_STATUS,
            vf.NET_MTU,
        ]
        if self.pairs > 1:
            bits.append(vf.NET_MQ)
        return sum(vf.bit(b) for b in bits)

    def protocol_features(self) -> int:
        return PROTOCOL_FEATURES

    def config_bytes(self) -> bytes:
        status = S_LINK_UP if self.link_up else 0
        return CONFIG.pack(self.mac, status, self.pairs, self.mtu, SPEED_UNKNOWN, DUPLEX_UNKNOWN)

    def set_link(self, up: bool) -> None:
        """Change the link status in config space and tell the front-end."""
        if up != self.link_up:
            self.link_up = up
            self.notify_config_changed()

    def reset(self) -> None:
        super().reset()
        for rx in self._rx:
            rx.pending = None
            rx.starved = False

    @property
    def _mergeable(self) -> bool:
        return vf.has(self.acked_features, vf.NET_MRG_RXBUF)

    # -- statistics -----------------------------------------------------------

    def stats(self, *, rx: bool | None = None) -> NetStats:
        """Counters summed over every ring (only RX or only TX rings when ``rx`` is given)."""
        total = NetStats()
        for index, s in enumerate(self._stats):
            if rx is None or rx == (index % 2 == 0):
                total.merge(s)
        return total

    # -- card services ----------------------------------------------------------

    def deliver(self, frame: bytes) -> None:
        """Queue an ethernet frame for the guest (RX of pair 0); thread-safe."""
        with self._inject_lock:
            if len(self._injected) >= MAX_INJECTED:
                self._stats[0].dropped["injected_overflow"] += 1
                return
            self._injected.append(bytes(frame))
            fd = self._inject_fd
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.eventfd_write(fd, 1)

    # -- the worker's view ------------------------------------------------------

    def queue_events(self, index: int) -> Sequence[int]:
        if index % 2 or not self.enabled_queues[index] or self._rx[index // 2].starved:
            return ()
        if index == 0:
            return (self.tap_fds[0], self._inject_fd)
        return (self.tap_fds[index // 2],)

    def process_queue(self, index: int, queue: SplitQueue) -> bool:
        if self.needs_reset or not self.enabled_queues[index]:
            return False
        stats = self._stats[index]
        try:
            if index % 2:
                return self._process_tx(index // 2, queue, stats)
            return self._process_rx(index // 2, queue, stats)
        except GuestRingError as exc:
            stats.errors["ring"] += 1
            self.mark_needs_reset(str(exc))
            return False

    # -- TX ------------------------------------------------------------------------

    def _process_tx(self, pair: int, queue: SplitQueue, stats: NetStats) -> bool:
        completions: list[tuple[int, int]] = []
        tap = self.tap_fds[pair]
        # A plain wire (no card services) needs no verdict, so the frame is
        # never copied: its guest views go straight to write/writev.
        plain = type(self.hook) is ForwardAll
        forwarded = 0
        queue.disable_kicks()
        while True:
            while True:
                if len(completions) >= COMPLETION_BATCH:
                    queue.push_many(completions)
                    completions.clear()
                    queue.signal_used()
                try:
                    chain = queue.pop()
                except GuestDescriptorError as exc:
                    stats.errors["chain"] += 1
                    completions.append((exc.head, 0))
                    continue
                if chain is None:
                    break
                frame = self._parse_tx(chain, stats)
                if frame is not None:
                    if plain:
                        forwarded += 1
                        self._write_tap(frame, chain.readable_len - HDR_LEN, tap, stats)
                    else:
                        self._transmit(frame, chain.readable_len - HDR_LEN, tap, stats)
                completions.append((chain.head, 0))
            if completions:
                queue.push_many(completions)
                completions.clear()
                queue.signal_used()
            queue.enable_kicks()
            if not queue.has_available():
                break
            queue.disable_kicks()
        if forwarded:
            stats.verdicts[TxVerdict.FORWARD.value] += forwarded
        return queue.should_notify()

    def _parse_tx(self, chain: DescriptorChain, stats: NetStats) -> list[memoryview] | None:
        """The frame's views into guest memory (not copied), or None if malformed."""
        if chain.writable:
            stats.errors["tx_writable"] += 1
            return None
        length = chain.readable_len - HDR_LEN
        if length < ETH_HLEN:
            stats.errors["tx_short"] += 1
            return None
        if length > self.max_frame:
            stats.errors["tx_oversize"] += 1
            return None
        first = chain.readable[0]
        if first.nbytes > HDR_LEN:  # the usual layout: header and frame in one buffer
            if first[0] or first[1]:  # flags, gso_type
                stats.errors["tx_offload"] += 1  # never offered: CSUM, GSO
                return None
            return [first[HDR_LEN:], *chain.readable[1:]]
        header, frame = split_front(chain.readable, HDR_LEN)
        flags, gso_type = _HDR_START.unpack(gather(header)[:2])
        if flags or gso_type:
            stats.errors["tx_offload"] += 1
            return None
        return frame

    def _transmit(self, frame: list[memoryview], length: int, tap: int, stats: NetStats) -> None:
        """Ask the hook for a verdict on a copy of the frame; write it if FORWARD."""
        data = bytearray().join(frame)  # one copy, which the hook may rewrite (routing)
        try:
            verdict = self.hook.classify_tx(data)
        except Exception:  # a hook bug must not stop the ring
            log.exception("NIC hook failed; frame dropped")
            stats.errors["hook"] += 1
            return
        stats.verdicts[verdict.value] += 1
        if verdict is TxVerdict.FORWARD:
            self._write_tap([memoryview(data)], length, tap, stats)

    def _write_tap(self, frame: list[memoryview], length: int, tap: int, stats: NetStats) -> None:
        try:
            if len(frame) == 1:
                os.write(tap, frame[0])
            else:
                os.writev(tap, frame)
        except BlockingIOError:
            stats.dropped["tap_full"] += 1
            return
        except OSError as exc:
            stats.dropped["tap_down" if exc.errno == errno.EIO else "tap_error"] += 1
            return
        stats.frames += 1
        stats.bytes += length

    # -- RX ------------------------------------------------------------------------

    def _next_frame(self, pair: int, stats: NetStats) -> bytes | memoryview | None:
        """An injected frame, else one from the TAP as a view of the pair's scratch buffer.

        The view is only valid until the next call for this pair.
        """
        if pair == 0 and self._injected:
            with self._inject_lock:
                if self._injected:
                    return self._injected.popleft()
        rx = self._rx[pair]
        try:
            # readv into a preallocated buffer: os.read would allocate (and
            # then shrink) a MAX_TAP_FRAME bytes object for every frame.
            n = os.readv(self.tap_fds[pair], rx.scratch)
            return rx.scratch_view[:n]
        except BlockingIOError:
            return None
        except OSError as exc:  # e.g. EBADFD while the TAP is being torn down
            stats.errors[f"tap_read_{errno.errorcode.get(exc.errno or 0, exc.errno)}"] += 1
            return None

    def _process_rx(self, pair: int, queue: SplitQueue, stats: NetStats) -> bool:
        rx = self._rx[pair]
        completions: list[tuple[int, int]] = []
        mergeable = self._mergeable
        rx.starved = False
        frames = 0
        if pair == 0:  # once per drain: a later deliver() writes it again
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._inject_fd)
        while frames < RX_BUDGET:
            frame = rx.pending if rx.pending is not None else self._next_frame(pair, stats)
            rx.pending = None
            if frame is None:
                break
            if not self._receive(frame, queue, completions, stats, mergeable):
                rx.pending = bytes(frame)  # the scratch buffer is reused
                # Out of buffers: re-arm kicks, then look once more (a buffer
                # added before the re-arm was visible produces no kick).
                had = queue.available()
                queue.enable_kicks()
                if queue.available() > had:
                    continue
                rx.starved = True
                break
            frames += 1
            if frames % COMPLETION_BATCH == 0:
                queue.push_many(completions)
                completions.clear()
                queue.signal_used()
        if completions:
            queue.push_many(completions)
            queue.signal_used()
        return queue.should_notify()

    def _receive(
        self,
        frame: bytes | memoryview,
        queue: SplitQueue,
        completions: list[tuple[int, int]],
        stats: NetStats,
        mergeable: bool,
    ) -> bool:
        """Place one frame; False (nothing consumed) when the ring has too few buffers."""
        need = HDR_LEN + len(frame)
        start = queue.last_avail_idx
        chains: list[DescriptorChain] = []
        room = 0
        rewindable = True
        while room < need:
            try:
                chain = queue.pop()
            except GuestDescriptorError as exc:
                stats.errors["chain"] += 1
                completions.append((exc.head, 0))
                rewindable = False
                continue
            if chain is None:
                if rewindable:
                    queue.last_avail_idx = start
                else:  # a broken chain was completed: the rest cannot go back
                    completions.extend((c.head, 0) for c in chains)
                    stats.dropped["rx_no_buffers"] += 1
                    return True
                return False
            if chain.readable or not chain.writable_len:
                stats.errors["rx_readable" if chain.readable else "rx_empty"] += 1
                completions.append((chain.head, 0))
                rewindable = False
                continue
            if not mergeable and chain.writable_len < need:
                # A single buffer must hold it all: drop the frame, keep the buffer.
                queue.last_avail_idx = (queue.last_avail_idx - 1) & 0xFFFF
                stats.dropped["rx_too_big"] += 1
                return True
            chains.append(chain)
            room += chain.writable_len
        stats.frames += 1
        stats.bytes += len(frame)
        first = chains[0].writable[0]
        if len(chains) == 1 and first.nbytes >= need:  # the usual case: no gluing
            first[:HDR_LEN] = _HDR_ONE_BUFFER
            first[HDR_LEN:need] = frame
            completions.append((chains[0].head, need))
            return True
        data = memoryview(_HDR.pack(0, 0, 0, 0, 0, 0, len(chains)) + frame)
        offset = 0
        for chain in chains:
            start_of_chain = offset
            for view in chain.writable:
                n = min(view.nbytes, need - offset)
                view[:n] = data[offset : offset + n]
                offset += n
                if offset == need:
                    break
            completions.append((chain.head, offset - start_of_chain))
        return True
