"""vhost-user messages: request codes, flags, the header, payload layouts and framing.

How it works
------------
Every message is a 12-byte header (request u32, flags u32, payload size u32,
native byte order as the spec says) followed by the payload; fds travel as
``SCM_RIGHTS`` with the ``sendmsg`` that carries the message.  ``MessageReader``
reassembles messages from whatever ``recvmsg`` returned: ``bytes_wanted`` says
how many bytes finish the current header or payload, so a read never crosses a
message boundary and every fd lands on the message it came with.  The payload
layouts (``VRING_STATE``, ``VRING_ADDR``, ``MEM_REGION`` ...) are precompiled
``struct`` objects, and the ``unpack``/``config_header``/``inflight`` helpers
decode them with the length checks the spec implies: a payload shorter than its
layout is ``MalformedMessage``, longer is accepted (front-ends pad).

This module is pure data: no state machine (``backend``), no I/O (``session``).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from offload.vhost_user.errors import MalformedMessage, RequestRefused

__all__ = [
    "CONFIG_HEADER",
    "HEADER",
    "INFLIGHT",
    "MAX_CONFIG_SIZE",
    "MAX_FDS_PER_MESSAGE",
    "MAX_MEM_SLOTS",
    "MAX_PAYLOAD",
    "MEM_HEADER",
    "MEM_REGION",
    "MEM_REG_MSG",
    "U64",
    "VHOST_F_LOG_ALL",
    "VHOST_USER_F_PROTOCOL_FEATURES",
    "VIRTIO_RING_F_EVENT_IDX",
    "VRING_ADDR",
    "VRING_FD_INDEX_MASK",
    "VRING_FD_NOFD",
    "VRING_STATE",
    "BackendRequest",
    "Flags",
    "FrontendRequest",
    "Message",
    "MessageReader",
    "ProtocolFeature",
    "RegionDescription",
    "config_header",
    "encode_backend_request",
    "encode_message",
    "inflight",
    "region",
    "reply",
    "reply_u64",
    "request_name",
    "unpack",
]


HEADER: Final = struct.Struct("=III")
"""request u32, flags u32, size u32 (native byte order, as the spec says)."""

MAX_PAYLOAD: Final = 4096
"""No front-end message is larger (the biggest is a 256-byte config or 8 regions)."""

MAX_MEM_SLOTS: Final = 32
"""Answer to GET_MAX_MEM_SLOTS (libvhost-user and QEMU use 32 too)."""

MAX_FDS_PER_MESSAGE: Final = 8
"""SET_MEM_TABLE carries at most 8 fds (VHOST_MEMORY_BASELINE_NREGIONS)."""

VHOST_USER_F_PROTOCOL_FEATURES: Final = 1 << 30
VHOST_F_LOG_ALL: Final = 1 << 26
VIRTIO_RING_F_EVENT_IDX: Final = 1 << 29

U64 = struct.Struct("=Q")
VRING_STATE = struct.Struct("=II")  # index, num
VRING_ADDR = struct.Struct("=IIQQQQ")  # index, flags, desc, used, avail, log
MEM_HEADER = struct.Struct("=II")  # nregions, padding
MEM_REGION = struct.Struct("=QQQQ")  # guest_phys_addr, size, user_addr, mmap_offset
MEM_REG_MSG = struct.Struct("=QQQQQ")  # padding, then one region
CONFIG_HEADER = struct.Struct("=III")  # offset, size, flags
INFLIGHT = struct.Struct("=QQHH4x")  # mmap_size, mmap_offset, num_queues, queue_size (24 bytes)
INFLIGHT_MIN = 20  # the same struct packed, as some front-ends send it
VRING_FD_INDEX_MASK: Final = 0xFF
VRING_FD_NOFD: Final = 1 << 8
MAX_CONFIG_SIZE: Final = 256


class FrontendRequest(enum.IntEnum):
    """Requests the front-end (QEMU) sends to us."""

    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_LOG_BASE = 6
    SET_LOG_FD = 7
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
    SEND_RARP = 19
    NET_SET_MTU = 20
    SET_BACKEND_REQ_FD = 21  # SET_SLAVE_REQ_FD in QEMU 7.2
    IOTLB_MSG = 22
    SET_VRING_ENDIAN = 23
    GET_CONFIG = 24
    SET_CONFIG = 25
    CREATE_CRYPTO_SESSION = 26
    CLOSE_CRYPTO_SESSION = 27
    POSTCOPY_ADVISE = 28
    POSTCOPY_LISTEN = 29
    POSTCOPY_END = 30
    GET_INFLIGHT_FD = 31
    SET_INFLIGHT_FD = 32
    GPU_SET_SOCKET = 33
    RESET_DEVICE = 34
    VRING_KICK = 35
    GET_MAX_MEM_SLOTS = 36
    ADD_MEM_REG = 37
    REM_MEM_REG = 38
    SET_STATUS = 39
    GET_STATUS = 40


class BackendRequest(enum.IntEnum):
    """Requests we send to the front-end on the back-end request channel."""

    IOTLB_MSG = 1
    CONFIG_CHANGE_MSG = 2
    VRING_HOST_NOTIFIER_MSG = 3


class Flags(enum.IntFlag):
    VERSION = 0x1
    REPLY = 0x4
    NEED_REPLY = 0x8


_VERSION_MASK: Final = 0x3


class ProtocolFeature(enum.IntFlag):
    MQ = 1 << 0
    LOG_SHMFD = 1 << 1
    RARP = 1 << 2
    REPLY_ACK = 1 << 3
    MTU = 1 << 4
    BACKEND_REQ = 1 << 5  # SLAVE_REQ in QEMU 7.2
    CROSS_ENDIAN = 1 << 6
    CRYPTO_SESSION = 1 << 7
    PAGEFAULT = 1 << 8
    CONFIG = 1 << 9
    BACKEND_SEND_FD = 1 << 10
    HOST_NOTIFIER = 1 << 11
    INFLIGHT_SHMFD = 1 << 12
    RESET_DEVICE = 1 << 13
    INBAND_NOTIFICATIONS = 1 << 14
    CONFIGURE_MEM_SLOTS = 1 << 15
    STATUS = 1 << 16


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded front-end message; ``request`` is a plain int when the code is unknown."""

    request: FrontendRequest | int
    flags: int
    payload: bytes
    fds: tuple[int, ...] = ()

    @property
    def need_reply(self) -> bool:
        return bool(self.flags & Flags.NEED_REPLY)


def encode_message(request: int, payload: bytes = b"", *, flags: int = Flags.VERSION) -> bytes:
    """Header plus payload, as both sides put them on the wire."""
    return HEADER.pack(request, flags, len(payload)) + payload


def encode_backend_request(
    request: BackendRequest, payload: bytes = b"", *, need_reply: bool
) -> bytes:
    """A back-end-initiated message (e.g. CONFIG_CHANGE_MSG) for the back-end request channel."""
    flags = Flags.VERSION | (Flags.NEED_REPLY if need_reply else 0)
    return encode_message(request, payload, flags=flags)


def reply(request: int, payload: bytes) -> bytes:
    return encode_message(request, payload, flags=Flags.VERSION | Flags.REPLY)


def reply_u64(request: int, value: int) -> bytes:
    return reply(request, U64.pack(value))


@dataclass(frozen=True, slots=True)
class RegionDescription:
    """A memory region as the front-end describes it (all u64)."""

    guest_phys_addr: int
    size: int
    user_addr: int
    mmap_offset: int


# --------------------------------------------------------------------------- framing


class MessageReader:
    """Reassembles front-end messages (and their fds) from the byte stream."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pending_fds: list[int] = []

    @property
    def bytes_wanted(self) -> int:
        """How many more bytes complete the header, or the payload once the header is in."""
        have = len(self._buffer)
        if have < HEADER.size:
            return HEADER.size - have
        size = int(HEADER.unpack_from(self._buffer)[2])
        return max(0, HEADER.size + min(size, MAX_PAYLOAD) - have)

    def receive_data(self, data: bytes, fds: Sequence[int] = ()) -> None:
        """Buffer bytes (and the fds that arrived with them) from the front-end."""
        self._buffer += data
        self._pending_fds.extend(fds)

    def take_pending_fds(self) -> tuple[int, ...]:
        """Fds received but not yet attached to a message (the caller closes them)."""
        fds = tuple(self._pending_fds)
        self._pending_fds.clear()
        return fds

    def next_message(self) -> Message | None:
        """The next complete message, or None when more bytes are needed.

        Raises ``MalformedMessage`` on a bad version or an oversized payload; the
        fds that arrived so far are then left for ``take_pending_fds``.
        """
        if len(self._buffer) < HEADER.size:
            return None
        request, flags, size = HEADER.unpack_from(self._buffer)
        if flags & _VERSION_MASK != Flags.VERSION:
            raise MalformedMessage(f"request {request}: unsupported version in flags {flags:#x}")
        if flags & Flags.REPLY:
            raise MalformedMessage(f"request {request}: front-end sent a reply ({flags:#x})")
        if size > MAX_PAYLOAD:
            raise MalformedMessage(f"request {request}: payload of {size} bytes is too large")
        end = HEADER.size + size
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[HEADER.size : end])
        del self._buffer[:end]
        fds = tuple(self._pending_fds)
        self._pending_fds.clear()
        try:
            code: FrontendRequest | int = FrontendRequest(request)
        except ValueError:
            code = request
        return Message(code, flags, payload, fds)


# --------------------------------------------------------------------------- payload decoding


def request_name(msg: Message) -> str:
    if isinstance(msg.request, FrontendRequest):
        return msg.request.name
    return f"request {msg.request}"


def unpack(layout: struct.Struct, msg: Message) -> tuple[int, ...]:
    # Payloads may be longer than the struct (front-ends pad); shorter is malformed.
    if len(msg.payload) < layout.size:
        raise MalformedMessage(
            f"{request_name(msg)}: payload of {len(msg.payload)} bytes, need {layout.size}"
        )
    values: tuple[int, ...] = layout.unpack_from(msg.payload)
    return values


def region(fields: Sequence[int]) -> RegionDescription:
    gpa, size, uva, offset = fields
    return RegionDescription(gpa, size, uva, offset)


def config_header(msg: Message) -> tuple[int, int, int]:
    offset, size, flags = unpack(CONFIG_HEADER, msg)
    if size > MAX_CONFIG_SIZE or offset > MAX_CONFIG_SIZE or offset + size > MAX_CONFIG_SIZE:
        raise RequestRefused(f"{request_name(msg)}: config access {offset}+{size} out of range")
    if len(msg.payload) != CONFIG_HEADER.size + size:
        raise MalformedMessage(
            f"{request_name(msg)}: payload of {len(msg.payload)} bytes for a {size}-byte access"
        )
    return offset, size, flags


def inflight(msg: Message) -> tuple[int, int, int, int]:
    if len(msg.payload) < INFLIGHT_MIN:
        raise MalformedMessage(f"{request_name(msg)}: payload of {len(msg.payload)} bytes")
    padded = msg.payload[: INFLIGHT.size].ljust(INFLIGHT.size, b"\0")
    mmap_size, mmap_offset, num_queues, queue_size = INFLIGHT.unpack(padded)
    return mmap_size, mmap_offset, num_queues, queue_size
