"""The vhost-user-blk front-end: connect, negotiate, set up queues, tear down.

:class:`VhostUserBlkFrontend` plays QEMU's part of ``docs/interop/vhost-user.rst``
for one block device.  Negotiation: GET_FEATURES (VERSION_1 and
PROTOCOL_FEATURES required), GET/SET_PROTOCOL_FEATURES (CONFIG required; MQ
and REPLY_ACK taken when offered, REPLY_ACK in force from the next message
on), GET_QUEUE_NUM, SET_OWNER, GET_CONFIG, SET_FEATURES.  Then guest memory
is laid out once (rings, indirect tables and request headers in region 0,
data buffers in the last region), announced with SET_MEM_TABLE, and every
queue is started with SET_VRING_NUM/BASE/ADDR/KICK/CALL before all are
enabled with SET_VRING_ENABLE.  ``close()`` sends GET_VRING_BASE for every
queue (recording the index the back-end reports), then closes the socket,
the eventfds and the memfd.
"""

from __future__ import annotations

import contextlib
import os
from types import TracebackType

from offload.testing import protocol
from offload.testing.blk import BlkConfig, BlkFeature, BlkQueue
from offload.testing.errors import BackendRefused, FrontendError
from offload.testing.guest_ram import DriverMemory, align_up
from offload.testing.protocol import ProtocolFeature, Request, VhostUserChannel
from offload.testing.ring import RingFeature, SplitQueueDriver, SplitRingLayout

__all__ = ["VhostUserBlkFrontend"]

# Features this driver understands and will accept when offered.
_RING_FEATURES_ALWAYS = (1 << RingFeature.VERSION_1) | (1 << RingFeature.PROTOCOL_FEATURES)
_BLK_FEATURES = sum(
    1 << bit
    for bit in (
        BlkFeature.SIZE_MAX,
        BlkFeature.SEG_MAX,
        BlkFeature.GEOMETRY,
        BlkFeature.RO,
        BlkFeature.BLK_SIZE,
        BlkFeature.FLUSH,
        BlkFeature.TOPOLOGY,
        BlkFeature.MQ,
        BlkFeature.DISCARD,
        BlkFeature.WRITE_ZEROES,
    )
)
_PROTOCOL_WANTED = (
    (1 << ProtocolFeature.MQ) | (1 << ProtocolFeature.REPLY_ACK) | (1 << ProtocolFeature.CONFIG)
)


class VhostUserBlkFrontend:
    """A vhost-user-blk device as seen by its driver: connect, negotiate, do I/O, close.

    Use as a context manager.  ``queues[i]`` is a :class:`BlkQueue`.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        num_queues: int = 1,
        queue_size: int = 128,
        depth: int = 32,
        max_io: int = 128 * 1024,
        event_idx: bool = True,
        indirect: bool = False,
        start_index: int = 0,
        regions: int = 2,
        blocking_eventfds: bool = False,
        timeout: float = 10.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.socket_path = os.fspath(socket_path)
        self.num_queues = num_queues
        self.queue_size = queue_size
        self.depth = depth
        self.max_io = max_io
        self.want_event_idx = event_idx
        self.want_indirect = indirect
        self.start_index = start_index
        self.timeout = timeout
        self.blocking_eventfds = blocking_eventfds
        self.queues: list[BlkQueue] = []
        self.device_features = 0
        self.features = 0
        self.device_protocol_features = 0
        self.protocol_features = 0
        self.max_queues = 1
        self.config: BlkConfig | None = None
        self.final_bases: list[int] = []
        self._rings_stopped = False
        self._channel: VhostUserChannel | None = None
        self._mem: DriverMemory | None = None
        self._indirect_max = 8
        ring_bytes = num_queues * (SplitRingLayout.total_bytes(queue_size) + 16 + depth * (32 + 2))
        data_bytes = num_queues * depth * align_up(max_io, 4096)
        indirect_bytes = num_queues * 16 * self._indirect_max * queue_size if indirect else 0
        ring_region = ring_bytes + indirect_bytes + 4096
        sizes = [ring_region, data_bytes] if regions >= 2 else [ring_region + data_bytes]
        self._region_sizes = sizes
        try:
            self._channel = VhostUserChannel.connect(
                self.socket_path, timeout=timeout, connect_timeout=connect_timeout
            )
            self._setup()
        except BaseException:
            self.close(stop_rings=False)
            raise

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> VhostUserBlkFrontend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def memory(self) -> DriverMemory:
        assert self._mem is not None
        return self._mem

    def has(self, bit: int) -> bool:
        """True if feature *bit* was negotiated."""
        return bool(self.features >> bit & 1)

    def offered(self, bit: int) -> bool:
        return bool(self.device_features >> bit & 1)

    @property
    def blk_config(self) -> BlkConfig:
        assert self.config is not None
        return self.config

    @property
    def messages_sent(self) -> int:
        """vhost-user messages sent so far on this connection."""
        return self._channel.messages_sent if self._channel is not None else 0

    @property
    def _chan(self) -> VhostUserChannel:
        assert self._channel is not None and not self._channel.closed
        return self._channel

    # -- session ---------------------------------------------------------------------------
    def _setup(self) -> None:
        self.device_features = self._chan.get_u64(Request.GET_FEATURES)
        if not self.offered(RingFeature.VERSION_1):
            raise BackendRefused("back-end does not offer VIRTIO_F_VERSION_1")
        if not self.offered(RingFeature.PROTOCOL_FEATURES):
            raise BackendRefused("back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES")
        self.device_protocol_features = self._chan.get_u64(Request.GET_PROTOCOL_FEATURES)
        wanted = self.device_protocol_features & _PROTOCOL_WANTED
        if not wanted >> ProtocolFeature.CONFIG & 1:
            raise BackendRefused("back-end lacks VHOST_USER_PROTOCOL_F_CONFIG")
        self._chan.set(Request.SET_PROTOCOL_FEATURES, protocol.u64(wanted))
        self.protocol_features = wanted  # REPLY_ACK applies from the next message on
        self._chan.reply_ack = bool(wanted >> ProtocolFeature.REPLY_ACK & 1)
        if wanted >> ProtocolFeature.MQ & 1:
            self.max_queues = self._chan.get_u64(Request.GET_QUEUE_NUM)
        if self.num_queues > self.max_queues:
            raise BackendRefused(f"{self.num_queues} queues wanted, back-end has {self.max_queues}")
        self._chan.set(Request.SET_OWNER)
        self.config = self.get_config()
        accept = _RING_FEATURES_ALWAYS | _BLK_FEATURES
        if self.want_event_idx:
            accept |= 1 << RingFeature.EVENT_IDX
        if self.want_indirect:
            accept |= 1 << RingFeature.INDIRECT_DESC
        self.features = self.device_features & accept
        if self.num_queues > 1 and not self.has(BlkFeature.MQ):
            raise BackendRefused("several queues wanted but VIRTIO_BLK_F_MQ is not offered")
        self._chan.set(Request.SET_FEATURES, protocol.u64(self.features))
        self._mem = DriverMemory(self._region_sizes)
        self._send_mem_table()
        indirect_max = self._indirect_max if self.has(RingFeature.INDIRECT_DESC) else 0
        for qi in range(self.num_queues):
            base = self.memory.alloc(SplitRingLayout.total_bytes(self.queue_size), align=16)
            layout = SplitRingLayout.packed(self.queue_size, base)
            vq = SplitQueueDriver(
                self.memory,
                layout,
                event_idx=self.has(RingFeature.EVENT_IDX),
                indirect_max=indirect_max,
                start_index=self.start_index,
                name=f"queue {qi}",
            )
            q = BlkQueue(
                qi,
                vq,
                depth=self.depth,
                max_io=self.max_io,
                timeout=self.timeout,
                blocking_eventfds=self.blocking_eventfds,
            )
            self.queues.append(q)
            self._start_queue(q)
        for q in self.queues:
            self._chan.set(Request.SET_VRING_ENABLE, protocol.vring_state(q.index, 1))

    def _send_mem_table(self) -> None:
        mem = self.memory
        payload = protocol.mem_table(mem.regions)
        self._chan.set(Request.SET_MEM_TABLE, payload, [mem.fd] * len(mem.regions))

    def _start_queue(self, q: BlkQueue) -> None:
        lay = q.vq.layout
        mem = self.memory
        chan = self._chan
        chan.set(Request.SET_VRING_NUM, protocol.vring_state(q.index, lay.size))
        chan.set(Request.SET_VRING_BASE, protocol.vring_state(q.index, q.vq.start_index))
        addr = protocol.vring_addr(
            q.index, desc=mem.uva(lay.desc), used=mem.uva(lay.used), avail=mem.uva(lay.avail)
        )
        chan.set(Request.SET_VRING_ADDR, addr)
        chan.set(Request.SET_VRING_KICK, protocol.u64(q.index), [q.kick_fd])
        chan.set(Request.SET_VRING_CALL, protocol.u64(q.index), [q.call_fd])

    def get_config(self, size: int = BlkConfig.SIZE) -> BlkConfig:
        """GET_CONFIG for the first *size* bytes of virtio_blk_config."""
        reply = self._chan.call(Request.GET_CONFIG, protocol.config_request(size))
        return BlkConfig.parse(protocol.config_reply(reply, size))

    def get_vring_base(self, index: int) -> int:
        """GET_VRING_BASE: stops ring *index*; returns the back-end's next avail index."""
        reply = self._chan.call(Request.GET_VRING_BASE, protocol.vring_state(index, 0))
        return protocol.vring_base_reply(reply, index)

    def stop(self) -> list[int]:
        """Stop every ring with GET_VRING_BASE; returns (and records) the bases."""
        self._rings_stopped = True  # close() must not try again if this fails
        self.final_bases = [self.get_vring_base(q.index) for q in self.queues]
        return self.final_bases

    def close(self, *, stop_rings: bool = True) -> None:
        """Stop the rings (best effort), then close socket, eventfds and memfd."""
        connected = self._channel is not None and not self._channel.closed
        if stop_rings and connected and self.queues and not self._rings_stopped:
            with contextlib.suppress(FrontendError, OSError):
                self.stop()
        if self._channel is not None:
            self._channel.close()  # kept: messages_sent stays readable
        for q in self.queues:
            q.close()
        if self._mem is not None:
            self._mem.close()
            self._mem = None
