"""One front-end connection: protocol state, guest memory, rings and their workers.

How it works
------------
``Session.run`` blocks in ``recvmsg`` on the connection (the server's serving
thread) and feeds what arrives into a fresh sans-I/O ``VhostUserBackend``;
reads use ``bytes_wanted`` so a ``recvmsg`` never crosses a message boundary and
fds (``socket.recv_fds``) stay with their message.  It then carries out the
effects that come back: maps memory through ``GuestMemory``, builds a
``SplitQueue`` per started ring and a ``QueueWorker`` to serve it, swaps
call/err eventfds, tells the device about SET_VRING_ENABLE, sends replies.
Fds a message carried are closed unless an effect took ownership of them.

Rings are served from the moment they start (SET_VRING_KICK), enabled or not,
as libvhost-user does: SET_VRING_ENABLE travels on the socket while the first
kick travels on the eventfd, so a worker may well see a request before the
enable.  The flag is recorded and handed to the device (``queue_enabled``),
which decides what a disabled ring means for it; SET_VRING_ENABLE(1) wakes the
worker to look at the ring once more.

Inflight tracking: when the front-end set an inflight region, the queue gets
the region's ``InflightQueue`` as its hooks; when a ring starts, the region is
reconciled with the used ring and the heads still in flight are processed again
first (``ResumingQueue``), so a back-end restarted under a running guest loses
and doubles nothing.  GET_INFLIGHT_FD allocates the region as a zero-filled
``memfd``; a region the next back-end cannot make sense of is re-initialised
(logged) rather than refused, since refusing would only make QEMU reconnect
into the same state.

Back-end request channel: ``send_config_change`` sends CONFIG_CHANGE_MSG (only
when CONFIG was negotiated), with NEED_REPLY when REPLY_ACK was.  It must not
run on the protocol thread: QEMU answers it only after asking us GET_CONFIG on
the main socket, hence ``send_config_change_async``.  Each session announces
the config once, when its first ring starts and a channel exists.

A device that went NEEDS_RESET is reset when the front-end restarts its rings
(every worker stopped, then a SET_VRING_KICK), and acked its features again.

Disconnect (EOF, a malformed message, any ``OffloadError`` while applying an
effect): every worker is stopped and joined, every fd closed, the memory table
and inflight mapping dropped (``close``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
import threading
from typing import Final

from offload.errors import OffloadError
from offload.memory import GuestMemory, MemoryRegion
from offload.vhost_user.backend import VhostUserBackend
from offload.vhost_user.device import VhostUserDevice
from offload.vhost_user.effects import (
    AddMemRegion,
    AllocateInflight,
    DiscardFds,
    Effect,
    Ignored,
    RemoveMemRegion,
    SendReply,
    SetBackendReqFd,
    SetInflightFd,
    SetMemTable,
    SetVringCall,
    SetVringErr,
    StartVring,
    StopVring,
    VringEnable,
)
from offload.vhost_user.errors import (
    BackendChannelError,
    InflightRegionInvalid,
    MalformedMessage,
    VhostUserError,
)
from offload.vhost_user.inflight import InflightQueue, InflightRegion, Recovery
from offload.vhost_user.messages import (
    HEADER,
    MAX_FDS_PER_MESSAGE,
    VHOST_USER_F_PROTOCOL_FEATURES,
    BackendRequest,
    Message,
    ProtocolFeature,
    RegionDescription,
    encode_backend_request,
)
from offload.vhost_user.vring import QueueWorker, ResumingQueue, VringSlot, close_fd
from offload.virtio.queue import SplitQueue

__all__ = ["Session", "send_config_change_async"]

log = logging.getLogger(__name__)

_BACKEND_REPLY_TIMEOUT: Final = 5.0
_U64 = struct.Struct("=Q")
_close = close_fd


class Session:
    """One front-end connection: protocol state, memory, rings."""

    def __init__(self, device: VhostUserDevice, sock: socket.socket) -> None:
        self.device = device
        self.sock = sock
        self.protocol = VhostUserBackend(device)
        self.memory = GuestMemory()
        self.slots = [VringSlot() for _ in range(device.num_queues)]
        self.inflight: InflightRegion | None = None
        self._backend_sock: socket.socket | None = None
        self._backend_lock = threading.Lock()
        self._config_announced = False
        self._closed = False

    # -- receive loop ---------------------------------------------------------

    def run(self) -> None:
        """Serve until the front-end goes away or breaks the protocol."""
        protocol = self.protocol
        try:
            while True:
                wanted = protocol.bytes_wanted
                data, fds, flags, _ = socket.recv_fds(
                    self.sock, wanted, MAX_FDS_PER_MESSAGE, socket.MSG_CMSG_CLOEXEC
                )
                if not data:
                    _close_all(fds)
                    log.info("front-end disconnected")
                    return
                protocol.receive_data(data, fds)
                if flags & socket.MSG_CTRUNC:
                    raise MalformedMessage("too many fds in one message (ancillary truncated)")
                while True:
                    msg = protocol.next_message()
                    if msg is None:
                        break
                    self._dispatch(msg)
        except (VhostUserError, OffloadError) as exc:
            log.warning("closing the front-end connection: %s", exc)
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE, errno.EBADF, errno.EINVAL):
                log.warning("front-end connection failed: %s", exc)
        finally:
            _close_all(protocol.take_pending_fds())

    def _dispatch(self, msg: Message) -> None:
        log.debug(
            "<- %s flags=%#x size=%d fds=%s", msg.request, msg.flags, len(msg.payload), msg.fds
        )
        try:
            effects = self.protocol.handle(msg)
        except BaseException:
            _close_all(msg.fds)
            raise
        owned = list(msg.fds)  # fds not yet handed to an owner when something fails
        try:
            for effect in effects:
                self._apply(effect, owned)
        finally:
            _close_all(owned)

    # -- effects ----------------------------------------------------------------

    def _apply(self, effect: Effect, owned: list[int]) -> None:
        if isinstance(effect, SendReply):
            self.sock.sendall(effect.data)
        elif isinstance(effect, StartVring):
            _disown(owned, effect.kick_fd)
            self._start_vring(effect)
        elif isinstance(effect, StopVring):
            last_avail = self._stop_vring(effect.index)
            self.sock.sendall(self.protocol.vring_base_reply(effect.index, last_avail))
        elif isinstance(effect, SetVringCall):
            _disown(owned, effect.fd)
            self.slots[effect.index].set_call(-1 if effect.fd is None else effect.fd)
        elif isinstance(effect, SetVringErr):
            _disown(owned, effect.fd)
            self.slots[effect.index].set_err(-1 if effect.fd is None else effect.fd)
        elif isinstance(effect, VringEnable):
            slot = self.slots[effect.index]
            slot.enabled = effect.enabled
            self.device.queue_enabled(effect.index, effect.enabled)
            if effect.enabled and slot.worker is not None:
                slot.worker.wake()
        elif isinstance(effect, SetMemTable):
            self.memory.replace(
                (_memory_region(r), fd) for r, fd in zip(effect.regions, effect.fds, strict=True)
            )
        elif isinstance(effect, AddMemRegion):
            self.memory.add_region(_memory_region(effect.region), effect.fd)
        elif isinstance(effect, RemoveMemRegion):
            self.memory.remove_region(_memory_region(effect.region))
        elif isinstance(effect, SetBackendReqFd):
            _disown(owned, effect.fd)
            self._set_backend_channel(socket.socket(fileno=effect.fd))
        elif isinstance(effect, AllocateInflight):
            self._allocate_inflight(effect)
        elif isinstance(effect, SetInflightFd):
            self._set_inflight(
                InflightRegion(
                    effect.fd,
                    mmap_size=effect.mmap_size,
                    mmap_offset=effect.mmap_offset,
                    num_queues=effect.num_queues,
                    queue_size=effect.queue_size,
                )
            )
        elif isinstance(effect, DiscardFds):
            pass  # still in ``owned``: closed by _dispatch
        elif isinstance(effect, Ignored):
            log.warning("ignored request %d: %s", effect.request, effect.reason)

    def _start_vring(self, effect: StartVring) -> None:
        cfg = effect.config
        slot = self.slots[cfg.index]
        if slot.worker is not None:
            self._stop_vring(cfg.index)
        self._reset_device_if_idle()
        try:
            size = cfg.size
            mem = self.memory
            desc_gpa = mem.uva_to_gpa(cfg.desc_user_addr, 16 * size)
            avail_gpa = mem.uva_to_gpa(cfg.avail_user_addr, 6 + 2 * size)
            used_gpa = mem.uva_to_gpa(cfg.used_user_addr, 6 + 8 * size)
            hooks = self._inflight_queue(cfg.index, size)
            queue: SplitQueue = SplitQueue(
                mem,
                size=size,
                desc_gpa=desc_gpa,
                avail_gpa=avail_gpa,
                used_gpa=used_gpa,
                event_idx=cfg.event_idx,
                inflight=hooks,
            )
            used_idx = queue.load_used_idx()
            queue.last_avail_idx = cfg.base
            if hooks is not None:
                try:
                    recovery = hooks.recover(
                        used_idx, lambda i: mem.read_u32(used_gpa + 4 + 8 * (i & (size - 1)))
                    )
                except InflightRegionInvalid as exc:
                    # Refusing would only make QEMU reconnect into the same state.
                    log.error("vq %d: inflight state unusable, starting afresh: %s", cfg.index, exc)
                    hooks.initialise(used_idx)
                    recovery = Recovery((), cfg.base, fresh=True)
                if not recovery.fresh:
                    if recovery.resubmit:
                        log.info(
                            "vq %d: resubmitting %d inflight request(s)",
                            cfg.index,
                            len(recovery.resubmit),
                        )
                        queue = ResumingQueue(
                            mem,
                            size=size,
                            desc_gpa=desc_gpa,
                            avail_gpa=avail_gpa,
                            used_gpa=used_gpa,
                            event_idx=cfg.event_idx,
                            inflight=hooks,
                            resubmit=recovery.resubmit,
                        )
                        queue.load_used_idx()
                    queue.last_avail_idx = recovery.last_avail_idx
        except BaseException:
            _close(effect.kick_fd)
            raise
        slot.enabled = cfg.enabled
        self.device.queue_enabled(cfg.index, cfg.enabled)
        queue.notifier = slot.signal_call  # mid-drain interrupts (SplitQueue.signal_used)
        worker = QueueWorker(
            index=cfg.index, queue=queue, kick_fd=effect.kick_fd, slot=slot, device=self.device
        )
        slot.worker = worker
        log.info(
            "vq %d started: size %d, avail %d, used %d, event_idx %s",
            cfg.index,
            size,
            queue.last_avail_idx,
            queue.used_idx,
            cfg.event_idx,
        )
        worker.start()
        if not self._config_announced and self._backend_sock is not None:
            # The config may have changed while no front-end was connected (the
            # image grew while this process was down, or between a restart and
            # QEMU's reconnect), and QEMU 7.2 does not re-read it on reconnect.
            # One CONFIG_CHANGE_MSG per session is harmless: QEMU re-reads the
            # config and interrupts the guest only if the capacity differs.
            self._config_announced = True
            send_config_change_async(self)

    def _reset_device_if_idle(self) -> None:
        """A device that went NEEDS_RESET is reset when the front-end restarts its rings."""
        if not self.device.needs_reset or any(s.worker for s in self.slots):
            return
        log.info("resetting the device before its rings restart")
        self.device.reset()
        self.device.ack_features(self.protocol.features & ~VHOST_USER_F_PROTOCOL_FEATURES)

    def _stop_vring(self, index: int) -> int:
        slot = self.slots[index]
        worker, slot.worker = slot.worker, None
        if worker is None:
            return 0
        last_avail = worker.stop()
        log.info("vq %d stopped at avail %d", index, last_avail)
        return last_avail

    def _inflight_queue(self, index: int, size: int) -> InflightQueue | None:
        region = self.inflight
        if region is None:
            return None
        if index >= region.num_queues or region.queue_size != size:
            log.warning(
                "vq %d (size %d) is not covered by the inflight region (%d x %d): untracked",
                index,
                size,
                region.num_queues,
                region.queue_size,
            )
            return None
        return region.queue(index)

    def _allocate_inflight(self, effect: AllocateInflight) -> None:
        fd = os.memfd_create("offload-inflight", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, effect.mmap_size)
            region = InflightRegion(
                fd,
                mmap_size=effect.mmap_size,
                mmap_offset=0,
                num_queues=effect.num_queues,
                queue_size=effect.queue_size,
            )
            socket.send_fds(self.sock, [effect.reply], [fd])
        finally:
            os.close(fd)
        self._set_inflight(region)

    def _set_inflight(self, region: InflightRegion) -> None:
        old, self.inflight = self.inflight, region
        if old is not None:
            old.close()

    def _set_backend_channel(self, sock: socket.socket) -> None:
        with self._backend_lock:
            old, self._backend_sock = self._backend_sock, sock
        if old is not None:
            old.close()

    # -- back-end requests ----------------------------------------------------

    def send_config_change(self) -> None:
        """CONFIG_CHANGE_MSG on the back-end channel (never call on the protocol thread)."""
        if not self.protocol.has_protocol_feature(ProtocolFeature.CONFIG):
            return
        need_reply = self.protocol.has_protocol_feature(ProtocolFeature.REPLY_ACK)
        with self._backend_lock:
            sock = self._backend_sock
            if sock is None:
                raise BackendChannelError("the front-end set no back-end request channel")
            try:
                sock.settimeout(_BACKEND_REPLY_TIMEOUT)
                sock.sendall(
                    encode_backend_request(BackendRequest.CONFIG_CHANGE_MSG, need_reply=need_reply)
                )
                if need_reply:
                    reply = _recv_exactly(sock, HEADER.size + _U64.size)
                    _, _, size = HEADER.unpack_from(reply)
                    (status,) = _U64.unpack_from(reply, HEADER.size)
                    if size != _U64.size or status != 0:
                        raise BackendChannelError(f"front-end answered CONFIG_CHANGE with {status}")
            except OSError as exc:
                raise BackendChannelError(f"back-end channel: {exc}") from exc

    # -- teardown ---------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.protocol.reset()
        for index, slot in enumerate(self.slots):
            self._stop_vring(index)
            slot.set_call(-1)
            slot.set_err(-1)
        with self._backend_lock:
            backend, self._backend_sock = self._backend_sock, None
        if backend is not None:
            backend.close()
        if self.inflight is not None:
            self.inflight.close()
            self.inflight = None
        self.memory.close()
        self.sock.close()


def send_config_change_async(session: Session) -> threading.Thread:
    """CONFIG_CHANGE_MSG from a new thread (returned, for tests to join)."""

    def send() -> None:
        try:
            session.send_config_change()
        except OffloadError as exc:
            log.warning("config change not delivered: %s", exc)

    thread = threading.Thread(target=send, name="vhost-user-config-change", daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------- helpers


def _memory_region(r: RegionDescription) -> MemoryRegion:
    return MemoryRegion(r.guest_phys_addr, r.size, r.user_addr, r.mmap_offset)


def _close_all(fds: list[int] | tuple[int, ...]) -> None:
    for fd in fds:
        _close(fd)
    if isinstance(fds, list):
        fds.clear()


def _disown(owned: list[int], fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(ValueError):
            owned.remove(fd)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise BackendChannelError("back-end channel closed")
        buf += chunk
    return bytes(buf)
