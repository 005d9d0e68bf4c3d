"""virtio-net (OASIS virtio 1.2 §5.1) between guest rings and a TAP: parse, execute, complete.

Queues: ring ``2i`` receives (RX) and ring ``2i+1`` transmits (TX) for queue
pair ``i``; pair ``i`` reads and writes the TAP's fd ``i`` (a multi-queue TAP
when there are several pairs).  There is no control queue: with a
``vhost-user`` netdev QEMU keeps the control virtqueue, the config space
(MAC, link status, ``max_virtqueue_pairs``) and the MAC/VLAN/RX filters to
itself and hands the back-end only the data rings.  The config struct here
serves other front-ends (the test driver in ``offload.testing``).

Every frame carries the 12-byte ``virtio_net_hdr_v1`` (VERSION_1 is required),
on the ring and on the TAP alike: the TAP is opened with ``IFF_VNET_HDR`` and
a 12-byte header size, so the header travels between ring and TAP as it is.
Offered offloads: CSUM and HOST_TSO4/6 (the guest may send partial checksums
and 64 KiB TCP frames; the kernel completes and segments them), and, when
the device was given ``tap_offloads`` (``Tap.set_offloads``), GUEST_CSUM
and GUEST_TSO4/6: on SET_FEATURES the device tells the TAP (TUNSETOFFLOAD)
to hand it exactly what the guest negotiated.  No ECN, UFO or USO.
``net_header`` holds the rules a header must keep.

TX (``_process_tx``), per chain: *parse* the header and the frame from the
readable buffers (a writable buffer, a short frame, or a header breaking
``net_header.check_tx``: an offload not negotiated, a checksum field outside
the frame, a GSO frame without NEEDS_CSUM or gso_size, an oversized frame,
make the chain malformed; the common all-zero header in a single buffer is
checked inline); *execute*: the NIC hook (``classify_tx``, given the frame
without its header) decides FORWARD (one ``os.write`` of header + frame to
the TAP), CONSUMED (a card service answered) or DROP (spoofing); with a hook
the header and frame are copied and the header checked again on the copy,
so what is written is what was checked; *complete* with used len 0.  A TAP
that is full (EAGAIN), down or refusing the header (EINVAL) drops the frame;
every outcome is counted.  The ring is drained before the driver is
notified (plus a notification every ``COMPLETION_BATCH`` completions).

RX (``_process_rx``), per frame: frames come first from the hook's
``deliver`` queue (pair 0 only, given a header with no offload), then from
the TAP, whose header is checked against what the guest negotiated
(``check_rx``; DATA_VALID is cleared for a guest without GUEST_CSUM) and a
bad one dropped and counted.  *Parse*: pop chains until their writable bytes
hold header + frame (one chain without MRG_RXBUF; as many as needed with it,
so a 64 KiB GSO frame spreads over many small buffers); a chain with
readable buffers or no room is malformed and returned with used len 0.  If
the ring runs dry mid-frame the popped chains are given back by rewinding
``last_avail_idx`` and the frame waits (``pending``) for the driver to add
buffers; the ring is then *starved*: ``queue_events`` stops naming the TAP
(a readable TAP must not spin the worker) and kicks are re-armed so the
driver's next buffer wakes us.  Without MRG_RXBUF a frame that does not fit
one chain is dropped (counted) and the chain kept.  *Execute*: ``num_buffers``
(chains used) is written into the header, header and frame are copied into
the views; *complete*: one used element per chain with the bytes it
received, pushed every ``COMPLETION_BATCH`` frames and at the end.  At most
``RX_BUDGET`` frames per wake-up, so a flooding TAP cannot hold a ring's
worker forever.

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
from typing import Final, Protocol

from offload.devices import net_header as nh
from offload.devices.base import DeviceBackend
from offload.errors import GuestDescriptorError, GuestRingError
from offload.network.hook import ForwardAll, NicHook, TxVerdict
from offload.vhost_user.messages import ProtocolFeature
from offload.virtio import features as vf
from offload.virtio.chain import DescriptorChain
from offload.virtio.iov import gather, split_front
from offload.virtio.queue import SplitQueue

__all__ = ["CONFIG", "HDR_LEN", "NetDevice", "NetStats", "S_LINK_UP", "TapOffloads"]

log = logging.getLogger(__name__)

HDR_LEN: Final = nh.HDR_LEN  # struct virtio_net_hdr_v1
_HDR_ONE_BUFFER: Final = nh.HDR.pack(0, 0, 0, 0, 0, 0, 1)  # an RX header, num_buffers = 1
_NUM_BUFFERS = struct.Struct("<H")  # at offset 10 of the header
S_LINK_UP: Final = 1
# struct virtio_net_config up to duplex: mac, status, max_virtqueue_pairs, mtu, speed, duplex.
CONFIG: Final = struct.Struct("<6sHHHIB")
ETH_HLEN: Final = 14
VLAN_HLEN: Final = 4
# One read from the TAP: the header and the largest GSO frame.
MAX_TAP_READ: Final = HDR_LEN + nh.MAX_GSO_FRAME
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


class TapOffloads(Protocol):
    """Tells the TAP which offloads its reader takes (``Tap.set_offloads``: TUNSETOFFLOAD)."""

    def __call__(self, *, csum: bool, tso4: bool, tso6: bool) -> None: ...


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
    pending: bytearray | None = None
    starved: bool = False
    scratch: list[bytearray] = field(default_factory=lambda: [bytearray(MAX_TAP_READ)])
    scratch_view: memoryview = field(init=False)

    def __post_init__(self) -> None:
        self.scratch_view = memoryview(self.scratch[0])


def _count_tap_error(exc: OSError, stats: NetStats) -> None:
    """A frame the TAP did not take: full (EAGAIN), down (EIO), a header it refused (EINVAL)."""
    reason = {errno.EAGAIN: "tap_full", errno.EIO: "tap_down", errno.EINVAL: "tap_einval"}
    stats.dropped[reason.get(exc.errno or 0, "tap_error")] += 1


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
        tap_offloads: TapOffloads | None = None,
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
        self._tap_offloads = tap_offloads
        self._host = nh.Offloads()  # what the guest may send
        self._guest = nh.Offloads()  # what the guest takes
        self._injected: collections.deque[bytearray] = collections.deque()
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
            vf.NET_CSUM,
            vf.NET_HOST_TSO4,
            vf.NET_HOST_TSO6,
        ]
        if self._tap_offloads is not None:  # the TAP can be told what we take
            bits += [vf.NET_GUEST_CSUM, vf.NET_GUEST_TSO4, vf.NET_GUEST_TSO6]
        if self.pairs > 1:
            bits.append(vf.NET_MQ)
        return sum(vf.bit(b) for b in bits)

    def protocol_features(self) -> int:
        return PROTOCOL_FEATURES

    def ack_features(self, features: int) -> None:
        """Record the driver's features and tell the TAP what the guest takes."""
        super().ack_features(features)
        self._host = nh.Offloads.host(self.acked_features)
        self._set_guest_offloads(nh.Offloads.guest(self.acked_features))

    def _set_guest_offloads(self, offloads: nh.Offloads) -> None:
        # The TAP first, then our checks: a frame the TAP offloaded under the
        # old setting is dropped and counted rather than handed on unchecked.
        # If the TAP refuses, it keeps its old setting and ``check_rx`` drops
        # whatever it hands us that the guest did not negotiate.
        if self._tap_offloads is not None:
            try:
                self._tap_offloads(csum=offloads.csum, tso4=offloads.tso4, tso6=offloads.tso6)
            except Exception as exc:  # TapError, OSError: never stop the protocol thread
                log.warning("cannot set the TAP's offloads: %s", exc)
        self._guest = offloads

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
        self._host = nh.Offloads()
        self._set_guest_offloads(nh.Offloads())
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
            self._injected.append(bytearray(_HDR_ONE_BUFFER) + frame)
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
        forwarded = written = written_bytes = 0
        pop, write, max_frame = queue.pop, os.write, self.max_frame
        queue.disable_kicks()
        while True:
            while True:
                if len(completions) >= COMPLETION_BATCH:
                    queue.push_many(completions)
                    completions.clear()
                    queue.signal_used()
                try:
                    chain = pop()
                except GuestDescriptorError as exc:
                    stats.errors["chain"] += 1
                    completions.append((exc.head, 0))
                    continue
                if chain is None:
                    break
                readable = chain.readable
                first = readable[0] if readable else None
                length = chain.readable_len - HDR_LEN
                if (
                    plain
                    and first is not None
                    and len(readable) == 1
                    and not chain.writable
                    and first.nbytes >= HDR_LEN + ETH_HLEN
                    and not (first[0] or first[1])
                    and length <= max_frame
                ):
                    # The usual frame, inlined: one buffer, no offload, no services.
                    forwarded += 1
                    try:
                        write(tap, first)
                    except OSError as exc:
                        _count_tap_error(exc, stats)
                    else:
                        written += 1
                        written_bytes += length
                else:
                    views = self._parse_tx(chain, stats)
                    if views is not None:
                        if plain:
                            forwarded += 1
                            self._write_tap(views, length, tap, stats)
                        else:
                            self._transmit(views, length, tap, stats)
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
            stats.frames += written
            stats.bytes += written_bytes
        return queue.should_notify()

    def _parse_tx(self, chain: DescriptorChain, stats: NetStats) -> list[memoryview] | None:
        """Header and frame as views into guest memory (not copied), or None if malformed."""
        if chain.writable:
            stats.errors["tx_writable"] += 1
            return None
        length = chain.readable_len - HDR_LEN
        if length < ETH_HLEN:
            stats.errors["tx_short"] += 1
            return None
        readable = chain.readable
        first = readable[0]
        # The usual case: header and frame in one buffer, no offload asked for.
        if first.nbytes >= HDR_LEN + ETH_HLEN and not (first[0] or first[1]):
            if length > self.max_frame:
                stats.errors["tx_oversize"] += 1
                return None
            return readable
        header, frame = split_front(readable, HDR_LEN)
        ethertype = gather(split_front(frame, ETH_HLEN)[0])[12:14]
        reason = nh.check_tx(
            gather(header), length, ethertype, self._host, max_frame=self.max_frame
        )
        if reason is not None:
            stats.errors[f"tx_{reason}"] += 1
            return None
        return readable

    def _transmit(self, views: list[memoryview], length: int, tap: int, stats: NetStats) -> None:
        """Ask the hook for a verdict on a copy of the frame; write it if FORWARD.

        The header is copied and checked again: the guest may have changed it
        since ``_parse_tx`` looked, and what is written is what was checked.
        """
        header_views, frame_views = split_front(views, HDR_LEN)
        header = gather(header_views)
        data = bytearray().join(frame_views)  # one copy, which the hook may rewrite (routing)
        if nh.check_tx(header, len(data), bytes(data[12:14]), self._host, max_frame=self.max_frame):
            stats.errors["tx_header_changed"] += 1
            return
        try:
            verdict = self.hook.classify_tx(data)
        except Exception:  # a hook bug must not stop the ring
            log.exception("NIC hook failed; frame dropped")
            stats.errors["hook"] += 1
            return
        stats.verdicts[verdict.value] += 1
        if verdict is TxVerdict.FORWARD:
            self._write_tap([memoryview(header), memoryview(data)], len(data), tap, stats)

    def _write_tap(self, frame: list[memoryview], length: int, tap: int, stats: NetStats) -> None:
        """Write header + frame as one TAP frame (the TAP checks the header again)."""
        try:
            if len(frame) == 1:
                os.write(tap, frame[0])
            else:
                os.writev(tap, frame)
        except OSError as exc:
            _count_tap_error(exc, stats)
            return
        stats.frames += 1
        stats.bytes += length

    # -- RX ------------------------------------------------------------------------

    def _next_frame(self, pair: int, stats: NetStats) -> bytearray | memoryview | None:
        """Header + frame: an injected one, else one from the TAP (a view of the scratch buffer).

        A TAP frame's header is checked against what the guest negotiated and
        a bad one dropped and counted.  The view is only valid until the next
        call for this pair.
        """
        if pair == 0 and self._injected:
            with self._inject_lock:
                if self._injected:
                    return self._injected.popleft()
        rx = self._rx[pair]
        view = rx.scratch_view
        for _ in range(RX_BUDGET):  # bounded even if every frame is dropped
            try:
                # readv into a preallocated buffer: os.read would allocate (and
                # then shrink) a large bytes object for every frame.
                n = os.readv(self.tap_fds[pair], rx.scratch)
            except BlockingIOError:
                return None
            except OSError as exc:  # e.g. EBADFD while the TAP is being torn down
                stats.errors[f"tap_read_{errno.errorcode.get(exc.errno or 0, exc.errno)}"] += 1
                return None
            if n < HDR_LEN + ETH_HLEN:
                stats.dropped["rx_short"] += 1
                continue
            if view[0] or view[1]:
                nh.clear_data_valid(view, self._guest)
                reason = nh.check_rx(
                    view[:HDR_LEN],
                    n - HDR_LEN,
                    view[HDR_LEN + 12 : HDR_LEN + 14].tobytes(),
                    self._guest,
                    max_frame=self.max_frame,
                )
                if reason is not None:
                    stats.dropped[f"rx_{reason}"] += 1
                    continue
            elif n - HDR_LEN > self.max_frame:  # larger than the MTU, yet not GSO
                stats.dropped["rx_oversize"] += 1
                continue
            return view[:n]
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
                rx.pending = bytearray(frame)  # the scratch buffer is reused
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
        data: bytearray | memoryview,
        queue: SplitQueue,
        completions: list[tuple[int, int]],
        stats: NetStats,
        mergeable: bool,
    ) -> bool:
        """Place one header + frame; False (nothing consumed) when the ring has too few buffers.

        ``num_buffers`` is written into ``data``'s header once the chains are known.
        """
        need = len(data)
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
        stats.bytes += need - HDR_LEN
        _NUM_BUFFERS.pack_into(data, 10, len(chains))
        first = chains[0].writable[0]
        if len(chains) == 1 and first.nbytes >= need:  # the usual case: one copy
            first[:need] = data
            completions.append((chains[0].head, need))
            return True
        source = memoryview(data)
        offset = 0
        for chain in chains:
            start_of_chain = offset
            for view in chain.writable:
                n = min(view.nbytes, need - offset)
                view[:n] = source[offset : offset + n]
                offset += n
                if offset == need:
                    break
            completions.append((chain.head, offset - start_of_chain))
        return True
