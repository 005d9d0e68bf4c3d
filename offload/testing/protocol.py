"""The front-end half of the vhost-user wire protocol, written from the spec.

QEMU's ``docs/interop/vhost-user.rst``: every message is a 12-byte
little-endian header (request, flags with version 1 / REPLY / NEED_REPLY,
payload size) then the payload; file descriptors ride along as
``SCM_RIGHTS`` ancillary data on the same ``sendmsg``.  The payload encoders
and reply decoders here are plain ``struct`` code; they share nothing with
the card's own ``offload.vhost_user.messages``, so each checks the other.

:class:`VhostUserChannel` owns the unix socket.  ``call()`` is for messages
with a real reply (the GET_* family, listed in :data:`HAS_REPLY`); ``set()``
is for everything else.  Once REPLY_ACK is negotiated (``reply_ack``), every
set-style message carries NEED_REPLY, ``set()`` waits for the u64 ack and a
non-zero ack raises :class:`BackendRefused`.  Replies are checked for the
echoed request, the REPLY flag, version 1 and a sane size before the payload
is read.
"""

from __future__ import annotations

import enum
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

from offload.testing.errors import (
    BackendDisconnected,
    BackendProtocolError,
    BackendRefused,
    FrontendTimeout,
)

__all__ = [
    "FLAG_NEED_REPLY",
    "FLAG_REPLY",
    "FLAG_VERSION_MASK",
    "HAS_REPLY",
    "MAX_CONFIG_SIZE",
    "MAX_MEM_REGIONS",
    "VHOST_USER_VERSION",
    "VRING_NOFD",
    "MemRegion",
    "ProtocolFeature",
    "Request",
    "VhostUserChannel",
    "config_reply",
    "config_request",
    "mem_table",
    "u64",
    "vring_addr",
    "vring_base_reply",
    "vring_state",
]


class Request(enum.IntEnum):
    """Front-end message types (vhost-user.rst, "Front-end message types")."""

    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    GET_QUEUE_NUM = 17
    SET_VRING_ENABLE = 18
    GET_CONFIG = 24
    SET_CONFIG = 25


class ProtocolFeature(enum.IntEnum):
    """Bit numbers of vhost-user protocol features."""

    MQ = 0
    LOG_SHMFD = 1
    RARP = 2
    REPLY_ACK = 3
    MTU = 4
    BACKEND_REQ = 5
    CROSS_ENDIAN = 6
    CRYPTO_SESSION = 7
    PAGEFAULT = 8
    CONFIG = 9
    BACKEND_SEND_FD = 10
    HOST_NOTIFIER = 11
    INFLIGHT_SHMFD = 12
    RESET_DEVICE = 13
    INBAND_NOTIFICATIONS = 14
    CONFIGURE_MEM_SLOTS = 15
    STATUS = 16


VHOST_USER_VERSION = 0x1
FLAG_VERSION_MASK = 0x3
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8
VRING_NOFD = 0x100  # in SET_VRING_KICK/CALL payloads: no fd attached
MAX_MEM_REGIONS = 8
MAX_CONFIG_SIZE = 256

# Messages answered with their own reply; REPLY_ACK does not apply to them.
HAS_REPLY = frozenset(
    {
        Request.GET_FEATURES,
        Request.GET_PROTOCOL_FEATURES,
        Request.GET_QUEUE_NUM,
        Request.GET_VRING_BASE,
        Request.GET_CONFIG,
    }
)

# Little-endian wire formats.
_HDR = struct.Struct("<III")  # request, flags, size
_U64 = struct.Struct("<Q")
_STATE = struct.Struct("<II")  # vring index, num
_ADDR = struct.Struct("<IIQQQQ")  # index, flags, desc, used, avail, log (front-end VAs)
_MEM_HEAD = struct.Struct("<II")  # nregions, padding
_MEM_REGION = struct.Struct("<QQQQ")  # gpa, size, userspace_addr, mmap_offset
_CONFIG_HEAD = struct.Struct("<III")  # offset, size, flags


# --------------------------------------------------------------------------- payloads


@dataclass(frozen=True)
class MemRegion:
    """One region of the memfd as announced in SET_MEM_TABLE."""

    gpa: int
    size: int
    uva: int
    offset: int  # mmap_offset into the memfd


def u64(value: int) -> bytes:
    """A u64 payload (features, SET_VRING_KICK/CALL index)."""
    return _U64.pack(value)


def vring_state(index: int, num: int) -> bytes:
    """struct vhost_vring_state (SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE)."""
    return _STATE.pack(index, num)


def vring_addr(index: int, *, desc: int, used: int, avail: int) -> bytes:
    """struct vhost_vring_addr with front-end virtual addresses, no flags, no log."""
    return _ADDR.pack(index, 0, desc, used, avail, 0)


def mem_table(regions: Sequence[MemRegion]) -> bytes:
    """SET_MEM_TABLE payload; one fd per region goes along with it."""
    return _MEM_HEAD.pack(len(regions), 0) + b"".join(
        _MEM_REGION.pack(r.gpa, r.size, r.uva, r.offset) for r in regions
    )


def config_request(size: int) -> bytes:
    """GET_CONFIG payload for the first *size* bytes of the device config space."""
    return _CONFIG_HEAD.pack(0, size, 0) + bytes(size)


def config_reply(reply: bytes, size: int) -> bytes:
    """The config bytes of a GET_CONFIG reply to :func:`config_request`."""
    if len(reply) != _CONFIG_HEAD.size + size:
        raise BackendProtocolError(f"GET_CONFIG reply has {len(reply)} bytes")
    offset, got, _flags = _CONFIG_HEAD.unpack_from(reply)
    if offset != 0 or got != size:
        raise BackendProtocolError(f"GET_CONFIG reply for offset {offset} size {got}")
    return reply[_CONFIG_HEAD.size :]


def vring_base_reply(reply: bytes, index: int) -> int:
    """The next avail index from a GET_VRING_BASE reply for ring *index*."""
    if len(reply) != _STATE.size:
        raise BackendProtocolError(f"GET_VRING_BASE reply has {len(reply)} bytes")
    got_index, num = _STATE.unpack(reply)
    if got_index != index:
        raise BackendProtocolError(f"GET_VRING_BASE for {index} answered for {got_index}")
    return int(num)


# --------------------------------------------------------------------------- socket


class VhostUserChannel:
    """One connected vhost-user socket, front-end side: framing, fds, replies, acks."""

    def __init__(self, sock: socket.socket, *, timeout: float) -> None:
        self._sock = sock
        self.timeout = timeout
        self.reply_ack = False  # REPLY_ACK negotiated: set-style messages want an ack
        self.messages_sent = 0

    @classmethod
    def connect(cls, path: str, *, timeout: float, connect_timeout: float) -> VhostUserChannel:
        """Connect to *path*, retrying until the back-end listens or *connect_timeout* passes."""
        deadline = time.monotonic() + connect_timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.connect(path)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                if time.monotonic() > deadline:
                    raise FrontendTimeout(f"cannot connect to {path}: {exc}") from exc
                time.sleep(0.02)
                continue
            sock.settimeout(timeout)
            return cls(sock, timeout=timeout)

    @property
    def closed(self) -> bool:
        return self._sock.fileno() == -1

    def close(self) -> None:
        """Close the socket; idempotent."""
        self._sock.close()

    def send(self, req: Request, payload: bytes = b"", fds: Sequence[int] = ()) -> bool:
        """Send one message; returns True if it asked for a REPLY_ACK."""
        need_ack = self.reply_ack and req not in HAS_REPLY
        flags = VHOST_USER_VERSION | (FLAG_NEED_REPLY if need_ack else 0)
        msg = _HDR.pack(req, flags, len(payload)) + payload
        try:
            if fds:
                socket.send_fds(self._sock, [msg], list(fds))
            else:
                self._sock.sendall(msg)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise BackendDisconnected(f"{req.name}: {exc}") from exc
        except TimeoutError as exc:
            raise FrontendTimeout(f"{req.name}: send timed out") from exc
        self.messages_sent += 1
        return need_ack

    def _recv_exact(self, n: int, what: str) -> bytes:
        chunks = bytearray()
        while len(chunks) < n:
            try:
                chunk = self._sock.recv(n - len(chunks))
            except TimeoutError as exc:
                raise FrontendTimeout(f"no reply to {what} in {self.timeout}s") from exc
            except ConnectionResetError as exc:
                raise BackendDisconnected(f"{what}: {exc}") from exc
            if not chunk:
                raise BackendDisconnected(f"back-end closed the socket awaiting {what}")
            chunks += chunk
        return bytes(chunks)

    def recv_reply(self, req: Request) -> bytes:
        """Read the reply to *req*; returns its payload."""
        request, flags, size = _HDR.unpack(self._recv_exact(_HDR.size, req.name))
        if request != req:
            raise BackendProtocolError(f"reply to {req.name} carries request {request}")
        if not flags & FLAG_REPLY or flags & FLAG_VERSION_MASK != VHOST_USER_VERSION:
            raise BackendProtocolError(f"reply to {req.name} has flags 0x{flags:x}")
        if size > 4096:
            raise BackendProtocolError(f"reply to {req.name} claims {size} bytes")
        return self._recv_exact(size, req.name) if size else b""

    def call(self, req: Request, payload: bytes = b"", fds: Sequence[int] = ()) -> bytes:
        """A message with a real reply (GET_*)."""
        self.send(req, payload, fds)
        return self.recv_reply(req)

    def set(self, req: Request, payload: bytes = b"", fds: Sequence[int] = ()) -> None:
        """A message without a reply; waits for the ack when REPLY_ACK is on."""
        if self.send(req, payload, fds):
            ack = self.recv_reply(req)
            if len(ack) != 8:
                raise BackendProtocolError(f"ack for {req.name} has {len(ack)} bytes")
            code = _U64.unpack(ack)[0]
            if code:
                raise BackendRefused(f"back-end nacked {req.name} with {code}")

    def get_u64(self, req: Request) -> int:
        """A GET_* whose reply is one u64."""
        reply = self.call(req)
        if len(reply) != 8:
            raise BackendProtocolError(f"{req.name} reply has {len(reply)} bytes, want 8")
        return int(_U64.unpack(reply)[0])
