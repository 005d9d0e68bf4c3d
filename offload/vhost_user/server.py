"""The vhost-user back-end server: the unix socket, the eventfds and the queue workers.

How it works
------------
``VhostUserServer`` listens on a unix socket and serves one front-end at a time
on its serving thread (``serve_forever``).  For each connection a ``_Session``
feeds the bytes and fds it receives into a fresh sans-I/O ``VhostUserBackend``
(``offload.vhost_user.protocol``) and carries out the effects that come back:
it maps memory through ``GuestMemory``, builds a ``SplitQueue`` per started ring,
starts and stops the queue workers, swaps call/err eventfds, sends replies.
Reads use ``bytes_wanted`` so a ``recvmsg`` never crosses a message boundary and
fds (``socket.recv_fds``) stay with their message.

Queue workers: one thread per started ring.  The kick eventfd belongs to the
front-end, which created it ``O_NONBLOCK``; that flag lives on the shared file
description, so we must not flip it (QEMU would then block in its own reads).
Each worker therefore sleeps in ``poll()`` on the kick fd and on its own wake
eventfd (used to stop it, or to re-check a ring that was just enabled), then
drains the kick counter with one ``eventfd_read``, lets the device process
*everything* available (``process_queue``), and signals the call eventfd once if
the device says the driver wants it.  The device may also signal in the middle
of a drain: the queue's ``notifier`` is the slot's ``signal_call``, which
``SplitQueue.signal_used`` calls when the driver waits for completions that were
just pushed.  A device throttled by QoS leaves work on the ring and names a
delay (``qos_delay``); the worker then polls with that timeout and runs the ring
again without a kick.  ``poll``, ``read``,
``preadv`` and ``pwritev`` all release the GIL, so while one queue waits for the
disk another queue's Python code runs, and the protocol thread (blocked in
``recvmsg``) never waits for a queue.

Threading model, measured (``docs/offload.md`` has the tables; 2-core dev VM,
4 KiB random I/O on tmpfs, same Python front-end): a single thread polling
every ring's kick fd, each ring served up to 32-128 requests per turn, was
built as an experiment.  With two queues it needs less CPU per I/O (5.8-6.2
us instead of 7.4 at QD32: no GIL hand-offs between queue threads) and does
+15-25% IOPS at QD32 and about +55% at QD1.  But one slow ``preadv`` (a page
cache miss on a real disk) then stalls every queue: with queue 0 reading data
that takes 1 ms per request, queue 1's QD1 reads went from 35 us p50 / 106 us
p99 (thread per queue) to 8.9 ms / 17.9 ms (single loop).  Queues must not
block each other, so the model stays one thread per queue.  Processes per
queue were not built: they would remove the GIL hand-offs (at most the 1-2.5 us
per I/O that two threads add over one) at the price of sharing the memory
table, the inflight region and the protocol across processes.  Spinning on the
ring for 20-50 us before ``poll`` was measured too and is not done: +50% IOPS
at QD1 on one queue when the machine is idle, but -25% with a busy neighbour
and -22% with two queues (a spinning thread holds the GIL), at 5-65% more CPU
per I/O.

Rings are served from the moment they start (SET_VRING_KICK), enabled or not,
as libvhost-user does: SET_VRING_ENABLE travels on the socket while the first
kick travels on the eventfd, so a worker may well see a request before the
enable; for a block device "process without side effects" has no meaning
other than processing.  The flag is recorded; SET_VRING_ENABLE(1) wakes the
worker to look at the ring once more.

Notification fds can be replaced while a ring runs (QEMU swaps the call fd
when the guest masks an MSI-X vector): each ring keeps its fds in a
``_VringSlot`` whose lock is held for the swap-and-close and for each
``eventfd_write``, so a worker never writes to an fd number that was closed
and reused.

Inflight tracking: when the front-end set an inflight region, the queue gets
the region's ``InflightQueue`` as its hooks; when a ring starts, the region is
reconciled with the used ring and the heads still in flight are processed again
first (``_ResumingQueue``), so a back-end restarted under a running guest loses
and doubles nothing.  GET_INFLIGHT_FD allocates the region as a zero-filled
``memfd`` (``os.memfd_create`` + ``ftruncate``); a region the next back-end
cannot make sense of is re-initialised (logged) rather than refused, since
refusing would only make QEMU reconnect into the same state.

Back-end request channel: ``notify_config_changed`` (wired to the device's
config-changed hook) sends CONFIG_CHANGE_MSG from a short-lived thread, with
NEED_REPLY when REPLY_ACK was negotiated.  It must not run on the protocol
thread: QEMU answers it only after asking us GET_CONFIG on the main socket.

Disconnect (EOF, a malformed message, any ``OffloadError`` while applying an
effect): every worker is stopped and joined, every fd closed, the memory table
and inflight mapping dropped, and the server accepts the next front-end.  A
reconnecting QEMU replays the whole set-up and the rings resume from the
indices (and inflight region) it sends.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import stat
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol

from offload.errors import OffloadError
from offload.memory import GuestMemory, MemoryRegion
from offload.vhost_user.errors import (
    BackendChannelError,
    InflightRegionInvalid,
    MalformedMessage,
    SocketInUse,
    SocketUnavailable,
    VhostUserError,
)
from offload.vhost_user.inflight import InflightQueue, InflightRegion, Recovery
from offload.vhost_user.protocol import (
    HEADER,
    MAX_FDS_PER_MESSAGE,
    VHOST_USER_F_PROTOCOL_FEATURES,
    AddMemRegion,
    AllocateInflight,
    BackendRequest,
    DeviceModel,
    DiscardFds,
    Effect,
    Ignored,
    Message,
    ProtocolFeature,
    RegionDescription,
    RemoveMemRegion,
    SendReply,
    SetBackendReqFd,
    SetInflightFd,
    SetMemTable,
    SetVringCall,
    SetVringErr,
    StartVring,
    StopVring,
    VhostUserBackend,
    VringEnable,
    encode_backend_request,
)
from offload.virtio.chain import DescriptorChain
from offload.virtio.queue import SplitQueue

__all__ = ["SocketInUse", "SocketUnavailable", "VhostUserDevice", "VhostUserServer"]

log = logging.getLogger(__name__)

_BACKEND_REPLY_TIMEOUT: Final = 5.0
_U64 = struct.Struct("=Q")


class VhostUserDevice(DeviceModel, Protocol):
    """The device contract the server drives (``offload.devices.base`` implements it)."""

    def process_queue(self, index: int, queue: SplitQueue) -> bool:
        """Process everything available on ``queue``; True if the driver should be notified."""
        ...


# --------------------------------------------------------------------------- queues


class _ResumingQueue(SplitQueue):
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


class _VringSlot:
    """Per-ring fds that outlive a worker (call/err can change while it runs)."""

    __slots__ = ("call_fd", "enabled", "err_fd", "lock", "worker")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.call_fd = -1
        self.err_fd = -1
        self.enabled = False
        self.worker: _QueueWorker | None = None

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


class _QueueWorker:
    """One thread serving one started ring until ``stop``."""

    def __init__(
        self,
        *,
        index: int,
        queue: SplitQueue,
        kick_fd: int,
        slot: _VringSlot,
        process: Callable[[int, SplitQueue], bool],
        needs_reset: Callable[[], bool],
        qos_delay: Callable[[], float],
    ) -> None:
        self.index = index
        self.queue = queue
        self.kick_fd = kick_fd
        self._slot = slot
        self._process = process
        self._needs_reset = needs_reset
        self._qos_delay = qos_delay
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
        poller.register(self.kick_fd, select.POLLIN)
        poller.register(self._wake_fd, select.POLLIN)
        poll = poller.poll
        read = os.eventfd_read
        timeout = self._serve()  # buffers made available before the ring started
        while not self._stopping:
            # Read only what poll reported: the front-end's fd may be blocking.
            for fd, _ in poll(timeout):
                try:  # noqa: SIM105 - contextlib.suppress costs 0.25 us per wake-up
                    read(fd)
                except BlockingIOError:
                    pass
            if self._stopping:
                break
            timeout = None if self.broken else self._serve()

    def _serve(self) -> int | None:
        """Let the device drain the ring; returns a poll timeout (ms) if QoS throttled it."""
        try:
            notify = self._process(self.index, self.queue)
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
        if self._needs_reset():
            # Nothing about the rings can be trusted: stop serving this one until
            # the front-end restarts it, and say so on the err eventfd.
            self.broken = True
            self._slot.signal_err()
            return None
        delay = self._qos_delay()
        return max(1, int(delay * 1000)) if delay > 0 else None


# --------------------------------------------------------------------------- session


class _Session:
    """One front-end connection: protocol state, memory, rings."""

    def __init__(self, device: VhostUserDevice, sock: socket.socket) -> None:
        self.device = device
        self.sock = sock
        self.protocol = VhostUserBackend(device)
        self.memory = GuestMemory()
        self.slots = [_VringSlot() for _ in range(device.num_queues)]
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
                        queue = _ResumingQueue(
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
        queue.notifier = slot.signal_call  # mid-drain interrupts (SplitQueue.signal_used)
        worker = _QueueWorker(
            index=cfg.index,
            queue=queue,
            kick_fd=effect.kick_fd,
            slot=slot,
            process=self.device.process_queue,
            needs_reset=self._device_needs_reset,
            qos_delay=self._device_qos_delay,
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

    def _device_needs_reset(self) -> bool:
        return bool(getattr(self.device, "needs_reset", False))

    def _device_qos_delay(self) -> float:
        delay = getattr(self.device, "qos_delay", None)
        return float(delay()) if callable(delay) else 0.0

    def _reset_device_if_idle(self) -> None:
        """A device that went NEEDS_RESET is reset when the front-end restarts its rings."""
        if not self._device_needs_reset() or any(s.worker for s in self.slots):
            return
        reset = getattr(self.device, "reset", None)
        if callable(reset):
            log.info("resetting the device before its rings restart")
            reset()
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


# --------------------------------------------------------------------------- server


class VhostUserServer:
    """Serve ``device`` to one vhost-user front-end at a time on ``socket_path``.

    ``bind()`` creates the listening socket (replacing a stale socket file, refusing
    one a live process listens on); ``serve_forever()`` accepts and serves until
    ``shutdown()``; ``start()`` does both on a background thread.  ``close()``
    shuts down and removes the socket file.  Also a context manager.
    """

    def __init__(self, device: VhostUserDevice, socket_path: str | os.PathLike[str]) -> None:
        self.device = device
        self.socket_path = Path(socket_path)
        self._listener: socket.socket | None = None
        self._session: _Session | None = None
        self._lock = threading.Lock()
        self._shutdown = threading.Event()
        self._thread: threading.Thread | None = None
        self._bound_inode: int | None = None
        self.connections = 0
        if hasattr(device, "config_changed"):  # DeviceBackend's hook
            setattr(device, "config_changed", self._on_config_changed)  # noqa: B010

    # -- lifecycle ------------------------------------------------------------

    def bind(self) -> None:
        if self._listener is not None:
            return
        path = self.socket_path
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            if path.exists() or path.is_symlink():
                if _is_live_listener(path):
                    raise SocketInUse(f"{path} is in use by a live listener")
                path.unlink()  # a dead back-end's leftover
            listener.bind(str(path))
            listener.listen(1)
        except OSError as exc:
            listener.close()
            raise SocketUnavailable(f"cannot listen on {path}: {exc.strerror or exc}") from exc
        except BaseException:
            listener.close()
            raise
        self._bound_inode = path.stat().st_ino
        self._listener = listener
        log.info("listening on %s", path)

    def serve_forever(self) -> None:
        self.bind()
        listener = self._listener
        assert listener is not None
        while not self._shutdown.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                if self._shutdown.is_set():
                    break
                raise
            conn.setblocking(True)
            session = _Session(self.device, conn)
            with self._lock:
                if self._shutdown.is_set():
                    conn.close()
                    break
                self._session = session
                self.connections += 1
            log.info("front-end connected")
            try:
                session.run()
            finally:
                with self._lock:
                    self._session = None
                session.close()

    def start(self) -> VhostUserServer:
        """Bind now and serve on a background thread."""
        self.bind()
        self._thread = threading.Thread(target=self.serve_forever, name="vhost-user", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving: wake the accept and receive calls, then wait for the thread."""
        self._shutdown.set()
        with self._lock:
            session = self._session
            listener = self._listener
        if session is not None:
            with contextlib.suppress(OSError):
                session.sock.shutdown(socket.SHUT_RDWR)
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def close(self) -> None:
        """Shut down and remove the socket file (if it is still ours)."""
        self.shutdown()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            with contextlib.suppress(OSError):
                if self.socket_path.stat().st_ino == self._bound_inode:
                    self.socket_path.unlink()

    def __enter__(self) -> VhostUserServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- state --------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._session is not None

    def _on_config_changed(self) -> None:
        self.notify_config_changed()

    def notify_config_changed(self) -> threading.Thread | None:
        """Tell the front-end the config space changed (e.g. online resize).

        Sends from a new thread (returned, for tests to join) since the
        front-end asks GET_CONFIG before it acknowledges.  Returns None when no
        front-end is connected: every session announces the config once when
        its first ring starts, so the next front-end learns of the change.
        """
        session = self._session
        if session is None:
            return None
        return send_config_change_async(session)


def send_config_change_async(session: _Session) -> threading.Thread:
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


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


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


def _is_live_listener(path: Path) -> bool:
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise SocketInUse(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:
        if exc.errno == errno.ENOTSOCK:
            raise SocketInUse(f"{path} exists and is not a socket") from exc
        return False
    finally:
        probe.close()
    return True
