"""A driver-side vhost-user-net front-end: plays QEMU plus a virtio_net driver.

Written from the specs like the rest of ``offload.testing`` (no code shared
with the card).  :class:`VhostUserNetFrontend` negotiates (VERSION_1 required;
MRG_RXBUF, MAC, STATUS, MTU, MQ and EVENT_IDX accepted when offered; with
``offloads=True`` also CSUM, GUEST_CSUM, HOST_TSO4/6 and GUEST_TSO4/6; MQ
and REPLY_ACK protocol features taken when offered), lays out one memfd,
starts ring ``2i`` (RX) and ``2i+1`` (TX) of every queue pair and enables
them.  RX buffers are 2 KiB (so a large frame spans several, as with
Linux's mergeable buffers); TX buffers hold ``tx_buf_size`` bytes, enough
for a 64 KiB TSO frame by default when offloads are taken.

``post_rx(pair, count, size)`` makes RX buffers available; ``send(frame,
pair, header=...)`` transmits a frame behind a 12-byte
``virtio_net_hdr_v1`` (zeroed unless given: the driver fills in
NEEDS_CSUM, gso_type and friends for offloads; ``tcp_header`` in
``offload.testing.tcp`` builds them); ``receive(pair, timeout)`` waits for
used RX buffers and reassembles frames from them: the first buffer's header
says how many buffers (``num_buffers``) the frame spans;
``receive_with_headers`` also returns each frame's header.  Buffers are
recycled as soon as they are read.
"""

from __future__ import annotations

import contextlib
import enum
import os
import select
import struct
import time
from types import TracebackType

from offload.testing import protocol
from offload.testing.errors import BackendRefused, FrontendTimeout
from offload.testing.guest_ram import DriverMemory
from offload.testing.protocol import ProtocolFeature, Request, VhostUserChannel
from offload.testing.ring import RingFeature, SplitQueueDriver, SplitRingLayout

__all__ = ["NET_HDR", "NetFeature", "NetQueue", "VhostUserNetFrontend"]

NET_HDR = struct.Struct("<BBHHHHH")  # virtio_net_hdr_v1, num_buffers last


class NetFeature(enum.IntEnum):
    CSUM = 0
    GUEST_CSUM = 1
    MTU = 3
    MAC = 5
    GUEST_TSO4 = 7
    GUEST_TSO6 = 8
    HOST_TSO4 = 11
    HOST_TSO6 = 12
    MRG_RXBUF = 15
    STATUS = 16
    CTRL_VQ = 17
    MQ = 22


_ACCEPT = (
    (1 << RingFeature.VERSION_1)
    | (1 << RingFeature.PROTOCOL_FEATURES)
    | (1 << RingFeature.EVENT_IDX)
    | sum(1 << b for b in (NetFeature.MTU, NetFeature.MAC, NetFeature.MRG_RXBUF))
    | sum(1 << b for b in (NetFeature.STATUS, NetFeature.MQ))
)
_OFFLOADS = sum(
    1 << b
    for b in (
        NetFeature.CSUM,
        NetFeature.GUEST_CSUM,
        NetFeature.HOST_TSO4,
        NetFeature.HOST_TSO6,
        NetFeature.GUEST_TSO4,
        NetFeature.GUEST_TSO6,
    )
)
RX_BUF_SIZE = 2048
TSO_BUF_SIZE = NET_HDR.size + 65536 + 64


class NetQueue:
    """One ring with its kick and call eventfds and fixed-size buffers."""

    def __init__(self, index: int, vq: SplitQueueDriver, *, buf_size: int) -> None:
        self.index = index
        self.vq = vq
        self.buf_size = buf_size
        self.kick_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.call_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        mem = vq.mem
        self.bufs = [mem.alloc(buf_size, align=64, region=0) for _ in range(vq.size)]
        self._free = list(range(vq.size - 1, -1, -1))

    def add(self, data: bytes | None, length: int) -> int:
        """A readable buffer holding ``data``, or a writable one of ``length`` bytes."""
        slot = self._free.pop()
        gpa = self.bufs[slot]
        if data is not None:
            self.vq.mem.write(gpa, data)
        self.vq.add([(gpa, len(data) if data is not None else length, data is None)], slot)
        return slot

    def kick(self) -> None:
        if self.vq.publish():
            os.eventfd_write(self.kick_fd, 1)

    def harvest(self) -> list[tuple[int, int]]:
        done = self.vq.harvest()
        self._free.extend(slot for slot, _ in done)
        return done

    def wait(self, timeout: float) -> bool:
        if self.vq.arm():
            return True
        ready = select.select([self.call_fd], [], [], timeout)[0]
        if ready:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self.call_fd)
        return bool(ready)

    def close(self) -> None:
        for fd in (self.kick_fd, self.call_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class VhostUserNetFrontend:
    """A vhost-user-net device as its driver sees it; use as a context manager."""

    def __init__(
        self,
        socket_path: str,
        *,
        pairs: int = 1,
        queue_size: int = 64,
        timeout: float = 10.0,
        offloads: bool = False,
        tx_buf_size: int | None = None,
    ) -> None:
        self.pairs = pairs
        self.offloads = offloads
        self.tx_buf_size = tx_buf_size or (TSO_BUF_SIZE if offloads else RX_BUF_SIZE)
        self.queue_size = queue_size
        self.timeout = timeout
        self.queues: list[NetQueue] = []
        self.features = 0
        self._mem: DriverMemory | None = None
        self._chan = VhostUserChannel.connect(socket_path, timeout=timeout, connect_timeout=timeout)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        chan = self._chan
        offered = chan.get_u64(Request.GET_FEATURES)
        if not offered >> RingFeature.VERSION_1 & 1:
            raise BackendRefused("back-end does not offer VERSION_1")
        if offered >> RingFeature.PROTOCOL_FEATURES & 1:
            pf = chan.get_u64(Request.GET_PROTOCOL_FEATURES)
            wanted = pf & ((1 << ProtocolFeature.MQ) | (1 << ProtocolFeature.REPLY_ACK))
            chan.set(Request.SET_PROTOCOL_FEATURES, protocol.u64(wanted))
            chan.reply_ack = bool(wanted >> ProtocolFeature.REPLY_ACK & 1)
            if (
                wanted >> ProtocolFeature.MQ & 1
                and chan.get_u64(Request.GET_QUEUE_NUM) < 2 * self.pairs
            ):
                raise BackendRefused(f"back-end has too few queues for {self.pairs} pairs")
        chan.set(Request.SET_OWNER)
        self.features = offered & (_ACCEPT | (_OFFLOADS if self.offloads else 0))
        chan.set(Request.SET_FEATURES, protocol.u64(self.features))
        nqueues = 2 * self.pairs
        ring_bytes = nqueues * (SplitRingLayout.total_bytes(self.queue_size) + 4096)
        buf_bytes = self.pairs * self.queue_size * (RX_BUF_SIZE + self.tx_buf_size + 128)
        self._mem = DriverMemory([ring_bytes + buf_bytes + 65536])
        mem = self._mem
        chan.set(Request.SET_MEM_TABLE, protocol.mem_table(mem.regions), [mem.fd])
        event_idx = bool(self.features >> RingFeature.EVENT_IDX & 1)
        for index in range(nqueues):
            base = mem.alloc(SplitRingLayout.total_bytes(self.queue_size), align=16)
            layout = SplitRingLayout.packed(self.queue_size, base)
            vq = SplitQueueDriver(mem, layout, event_idx=event_idx, name=f"vq{index}")
            q = NetQueue(index, vq, buf_size=self.tx_buf_size if index % 2 else RX_BUF_SIZE)
            self.queues.append(q)
            chan.set(Request.SET_VRING_NUM, protocol.vring_state(index, self.queue_size))
            chan.set(Request.SET_VRING_BASE, protocol.vring_state(index, 0))
            addr = protocol.vring_addr(
                index,
                desc=mem.uva(layout.desc),
                used=mem.uva(layout.used),
                avail=mem.uva(layout.avail),
            )
            chan.set(Request.SET_VRING_ADDR, addr)
            chan.set(Request.SET_VRING_KICK, protocol.u64(index), [q.kick_fd])
            chan.set(Request.SET_VRING_CALL, protocol.u64(index), [q.call_fd])
        if offered >> RingFeature.PROTOCOL_FEATURES & 1:
            for q in self.queues:
                chan.set(Request.SET_VRING_ENABLE, protocol.vring_state(q.index, 1))

    @property
    def mergeable(self) -> bool:
        return bool(self.features >> NetFeature.MRG_RXBUF & 1)

    def post_rx(self, pair: int = 0, count: int = 16) -> None:
        q = self.queues[2 * pair]
        for _ in range(count):
            q.add(None, q.buf_size)
        q.kick()

    def has(self, feature: NetFeature) -> bool:
        """Whether ``feature`` was negotiated."""
        return bool(self.features >> feature & 1)

    def send(self, frame: bytes, pair: int = 0, *, header: bytes | None = None) -> None:
        """Transmit one frame (waiting for a free TX buffer if the ring is full)."""
        q = self.queues[2 * pair + 1]
        data = (bytes(NET_HDR.size) if header is None else header) + frame
        if len(data) > q.buf_size:
            raise ValueError(f"{len(data)} bytes do not fit a {q.buf_size}-byte TX buffer")
        q.harvest()
        deadline = time.monotonic() + self.timeout
        while not q._free:
            q.kick()
            left = deadline - time.monotonic()
            if left <= 0 or not q.wait(left):
                raise FrontendTimeout(f"TX ring of pair {pair} stays full ({q.vq.describe()})")
            q.harvest()
        q.add(data, 0)
        q.kick()

    def receive(self, pair: int = 0, timeout: float | None = None) -> list[bytes]:
        """Frames received so far (waiting up to ``timeout`` for the first one)."""
        return [frame for _, frame in self.receive_with_headers(pair, timeout)]

    def receive_with_headers(
        self, pair: int = 0, timeout: float | None = None
    ) -> list[tuple[bytes, bytes]]:
        """(virtio-net header, frame) received so far, waiting up to ``timeout`` for one."""
        q = self.queues[2 * pair]
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            done = q.vq.harvest()
            if done:
                break
            left = deadline - time.monotonic()
            if left <= 0 or not q.wait(left):
                raise FrontendTimeout(f"no frame on pair {pair} ({q.vq.describe()})")
        frames: list[tuple[bytes, bytes]] = []
        parts: list[bytes] = []
        header = b""
        expect = 0
        for slot, length in done:
            data = q.vq.mem.read(q.bufs[slot], length)
            if not parts:
                header = data[: NET_HDR.size]
                expect = NET_HDR.unpack(header)[6] if self.mergeable else 1
                data = data[NET_HDR.size :]
            parts.append(data)
            if len(parts) == expect:
                frames.append((header, b"".join(parts)))
                parts = []
        q._free.extend(slot for slot, _ in done)
        self.post_rx(pair, len(done))
        return frames

    def close(self) -> None:
        self._chan.close()
        for q in self.queues:
            q.close()
        if self._mem is not None:
            self._mem.close()
            self._mem = None

    def __enter__(self) -> VhostUserNetFrontend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
