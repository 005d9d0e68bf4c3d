"""Sans-I/O vhost-user back-end protocol: message bytes and fds in, replies and effects out.

How it works
------------
The object never touches a socket, an fd or a thread.  The server feeds it the bytes
and fds it received (``receive_data``) and pulls complete messages out
(``next_message``); ``bytes_wanted`` tells the server how many bytes finish the
current header or payload, so a ``recvmsg`` never reads across a message boundary
and every fd lands on the message it was sent with (QEMU sends a message, payload
and fds with one ``sendmsg``).

``handle(message)`` checks the payload layout, updates the connection state and
returns a list of *effects* for the server to carry out, in order:

* replies are ``SendReply(data)`` with the encoded bytes; a REPLY_ACK
  acknowledgement (u64 0 = success) is appended whenever the front-end set
  NEED_REPLY on a message that has no reply of its own;
* everything that needs the outside world is a typed effect (``SetMemTable``,
  ``StartVring``, ``SetVringCall``, ``StopVring`` ...).  Effects that carry fds
  hand them over: the server owns them from then on.  Fds that a message
  should not carry come back as ``DiscardFds``;
* two replies depend on the outside world: ``GET_VRING_BASE`` (the ring's
  ``last_avail_idx`` is known only once its worker stopped) returns
  ``StopVring``, and the server builds the reply with ``vring_base_reply``;
  ``GET_INFLIGHT_FD`` returns ``AllocateInflight`` carrying the reply bytes, which
  the server sends together with the shared-memory fd it created.

Device questions that have a synchronous answer (features, queue count, config
space) are asked of the ``DeviceModel`` given to the constructor; it is plain
in-memory state, so the protocol stays testable with a fake.

Errors: a message whose header or payload cannot be decoded raises
``MalformedMessage`` and the server closes that connection.  A well-formed
request that cannot be honoured (bad ring index, ring size not a power of two,
a feature never offered ...) raises ``RequestRefused`` internally; it becomes a
non-zero REPLY_ACK if the front-end asked for one, otherwise the connection is
closed, because the front-end would carry on believing it succeeded.  Unknown
request codes are refused the same way except that, without NEED_REPLY, they
are only reported (``Ignored``) since they change no state.

Vring lifecycle (per ring, the table ``VRING_TRANSITIONS``): a ring is STOPPED
until SET_VRING_KICK starts it and GET_VRING_BASE stops it again.  Whether a
started ring is processed is the separate *enabled* flag: rings start enabled
when VHOST_USER_F_PROTOCOL_FEATURES was not negotiated, otherwise disabled until
SET_VRING_ENABLE(1).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from offload.vhost_user.errors import (
    InvalidTransition,
    MalformedMessage,
    RequestRefused,
    UnknownRequest,
)
from offload.vhost_user.inflight import inflight_region_size

__all__ = [
    "HEADER",
    "MAX_FDS_PER_MESSAGE",
    "MAX_MEM_SLOTS",
    "MAX_PAYLOAD",
    "OFFERED_PROTOCOL_FEATURES",
    "VHOST_USER_F_PROTOCOL_FEATURES",
    "VRING_TRANSITIONS",
    "AddMemRegion",
    "AllocateInflight",
    "BackendRequest",
    "DeviceModel",
    "DiscardFds",
    "Effect",
    "Flags",
    "FrontendRequest",
    "Ignored",
    "Message",
    "ProtocolFeature",
    "RegionDescription",
    "RemoveMemRegion",
    "SendReply",
    "SetBackendReqFd",
    "SetInflightFd",
    "SetMemTable",
    "SetVringCall",
    "SetVringErr",
    "StartVring",
    "StopVring",
    "VhostUserBackend",
    "VringConfig",
    "VringEnable",
    "VringEvent",
    "VringState",
    "encode_backend_request",
    "encode_message",
    "vring_transition",
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

_U64 = struct.Struct("=Q")
_VRING_STATE = struct.Struct("=II")  # index, num
_VRING_ADDR = struct.Struct("=IIQQQQ")  # index, flags, desc, used, avail, log
_MEM_HEADER = struct.Struct("=II")  # nregions, padding
_MEM_REGION = struct.Struct("=QQQQ")  # guest_phys_addr, size, user_addr, mmap_offset
_MEM_REG_MSG = struct.Struct("=QQQQQ")  # padding, then one region
_CONFIG_HEADER = struct.Struct("=III")  # offset, size, flags
_INFLIGHT = struct.Struct("=QQHH4x")  # mmap_size, mmap_offset, num_queues, queue_size (24 bytes)
_INFLIGHT_MIN = 20  # the same struct packed, as some front-ends send it
_VRING_FD_INDEX_MASK: Final = 0xFF
_VRING_FD_NOFD: Final = 1 << 8
_MAX_CONFIG_SIZE: Final = 256


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


OFFERED_PROTOCOL_FEATURES: Final = (
    ProtocolFeature.MQ
    | ProtocolFeature.REPLY_ACK
    | ProtocolFeature.BACKEND_REQ
    | ProtocolFeature.CONFIG
    | ProtocolFeature.INFLIGHT_SHMFD
    | ProtocolFeature.CONFIGURE_MEM_SLOTS
)


class DeviceModel(Protocol):
    """What the protocol asks the device synchronously (a subset of the device backend)."""

    @property
    def num_queues(self) -> int: ...

    @property
    def max_queue_size(self) -> int: ...

    def features(self) -> int: ...

    def ack_features(self, features: int) -> None: ...

    def get_config(self, offset: int, size: int) -> bytes: ...

    def set_config(self, offset: int, data: bytes) -> None: ...


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


def _reply(request: int, payload: bytes) -> bytes:
    return encode_message(request, payload, flags=Flags.VERSION | Flags.REPLY)


def _reply_u64(request: int, value: int) -> bytes:
    return _reply(request, _U64.pack(value))


# --------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class RegionDescription:
    """A memory region as the front-end describes it (all u64)."""

    guest_phys_addr: int
    size: int
    user_addr: int
    mmap_offset: int


@dataclass(frozen=True, slots=True)
class VringConfig:
    """Everything the server needs to build a queue once the ring starts."""

    index: int
    size: int
    desc_user_addr: int
    avail_user_addr: int
    used_user_addr: int
    base: int
    event_idx: bool
    enabled: bool


@dataclass(frozen=True, slots=True)
class SendReply:
    data: bytes


@dataclass(frozen=True, slots=True)
class SetMemTable:
    """Replace the whole memory table; ``fds[i]`` backs ``regions[i]``."""

    regions: tuple[RegionDescription, ...]
    fds: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AddMemRegion:
    region: RegionDescription
    fd: int


@dataclass(frozen=True, slots=True)
class RemoveMemRegion:
    region: RegionDescription


@dataclass(frozen=True, slots=True)
class StartVring:
    """SET_VRING_KICK: (re)start a ring; the server stops a running worker first."""

    config: VringConfig
    kick_fd: int


@dataclass(frozen=True, slots=True)
class StopVring:
    """GET_VRING_BASE: stop the ring, then send ``vring_base_reply(index, last_avail_idx)``."""

    index: int


@dataclass(frozen=True, slots=True)
class SetVringCall:
    index: int
    fd: int | None


@dataclass(frozen=True, slots=True)
class SetVringErr:
    index: int
    fd: int | None


@dataclass(frozen=True, slots=True)
class VringEnable:
    index: int
    enabled: bool


@dataclass(frozen=True, slots=True)
class SetBackendReqFd:
    fd: int


@dataclass(frozen=True, slots=True)
class AllocateInflight:
    """GET_INFLIGHT_FD: create a zeroed shared region of ``mmap_size`` bytes, map it, and
    send ``reply`` with its fd attached."""

    mmap_size: int
    num_queues: int
    queue_size: int
    reply: bytes


@dataclass(frozen=True, slots=True)
class SetInflightFd:
    fd: int
    mmap_size: int
    mmap_offset: int
    num_queues: int
    queue_size: int


@dataclass(frozen=True, slots=True)
class DiscardFds:
    """Fds the message should not have carried (or that we refuse): close them unused."""

    fds: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Ignored:
    """A request that was refused without a way to tell the front-end; for the log."""

    request: int
    reason: str


Effect = (
    SendReply
    | SetMemTable
    | AddMemRegion
    | RemoveMemRegion
    | StartVring
    | StopVring
    | SetVringCall
    | SetVringErr
    | VringEnable
    | SetBackendReqFd
    | AllocateInflight
    | SetInflightFd
    | DiscardFds
    | Ignored
)


# --------------------------------------------------------------------------- vring lifecycle


class VringState(enum.Enum):
    STOPPED = "stopped"
    STARTED = "started"


class VringEvent(enum.Enum):
    KICK = "kick"  # SET_VRING_KICK
    GET_BASE = "get_base"  # GET_VRING_BASE
    RESET = "reset"  # front-end gone, RESET_OWNER / RESET_DEVICE


VRING_TRANSITIONS: Final[dict[VringState, dict[VringEvent, VringState]]] = {
    VringState.STOPPED: {
        VringEvent.KICK: VringState.STARTED,
        VringEvent.GET_BASE: VringState.STOPPED,
        VringEvent.RESET: VringState.STOPPED,
    },
    VringState.STARTED: {
        VringEvent.KICK: VringState.STARTED,
        VringEvent.GET_BASE: VringState.STOPPED,
        VringEvent.RESET: VringState.STOPPED,
    },
}


def vring_transition(state: VringState, event: VringEvent) -> VringState:
    try:
        return VRING_TRANSITIONS[state][event]
    except KeyError:
        raise InvalidTransition(f"vring cannot {event.value} while {state.value}") from None


@dataclass(slots=True)
class _Vring:
    state: VringState = VringState.STOPPED
    size: int = 0
    desc_user_addr: int = 0
    avail_user_addr: int = 0
    used_user_addr: int = 0
    addr_set: bool = False
    base: int = 0
    enabled: bool = False


# --------------------------------------------------------------------------- the protocol


def _expect_no_fds(msg: Message, effects: list[Effect]) -> None:
    if msg.fds:
        effects.append(DiscardFds(msg.fds))


@dataclass(slots=True)
class _ConnectionState:
    features: int = 0
    features_set: bool = False
    protocol_features: int = 0
    owner: bool = False
    vrings: list[_Vring] = field(default_factory=list)


class VhostUserBackend:
    """One front-end connection's protocol state (create a new one per connection)."""

    def __init__(self, device: DeviceModel) -> None:
        self._device = device
        self._state = _ConnectionState(vrings=[_Vring() for _ in range(device.num_queues)])
        self._buffer = bytearray()
        self._pending_fds: list[int] = []
        self._pending_stop: int | None = None

    # ---------------------------------------------------------------- framing

    @property
    def protocol_features(self) -> int:
        return self._state.protocol_features

    @property
    def features(self) -> int:
        return self._state.features

    def has_protocol_feature(self, feature: ProtocolFeature) -> bool:
        return bool(self._state.protocol_features & feature)

    def vring_state(self, index: int) -> VringState:
        return self._state.vrings[index].state

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
        """Fds received but not yet attached to a message (the server closes them)."""
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

    # ---------------------------------------------------------------- dispatch

    def handle(self, msg: Message) -> list[Effect]:
        """Effects for one message, replies included (see the module docstring)."""
        if self._pending_stop is not None:
            raise InvalidTransition(
                f"GET_VRING_BASE for ring {self._pending_stop} is still waiting for its reply"
            )
        effects: list[Effect] = []
        handler = _HANDLERS.get(msg.request)
        try:
            if handler is None:
                raise UnknownRequest(f"unknown request {int(msg.request)}")
            has_reply = handler(self, msg, effects)
        except RequestRefused as exc:
            # Roll back partial effects: fds they carried are returned for closing.
            fds = tuple(sorted(set(msg.fds)))
            effects = [DiscardFds(fds)] if fds else []
            if msg.need_reply:
                effects.append(SendReply(_reply_u64(msg.request, 1)))
            elif isinstance(exc, UnknownRequest | _Unsupported):
                effects.append(Ignored(int(msg.request), str(exc)))
            else:
                raise
            return effects
        if msg.need_reply and not has_reply:
            effects.append(SendReply(_reply_u64(msg.request, 0)))
        return effects

    def vring_base_reply(self, index: int, last_avail_idx: int) -> bytes:
        """The GET_VRING_BASE reply, once the server stopped ring ``index``."""
        if self._pending_stop != index:
            raise InvalidTransition(f"no GET_VRING_BASE pending for ring {index}")
        self._pending_stop = None
        self._state.vrings[index].base = last_avail_idx & 0xFFFF
        return _reply(
            FrontendRequest.GET_VRING_BASE, _VRING_STATE.pack(index, last_avail_idx & 0xFFFF)
        )

    # ---------------------------------------------------------------- helpers

    def _vring(self, index: int) -> _Vring:
        if not 0 <= index < len(self._state.vrings):
            raise RequestRefused(
                f"vring index {index} out of range (have {len(self._state.vrings)})"
            )
        return self._state.vrings[index]

    def _require_protocol_feature(self, feature: ProtocolFeature, request: str) -> None:
        if not self._state.protocol_features & feature:
            raise RequestRefused(f"{request} needs protocol feature {feature.name}, not negotiated")

    def _single_fd(self, msg: Message, what: str) -> int:
        if len(msg.fds) != 1:
            raise RequestRefused(f"{what} needs exactly one fd, got {len(msg.fds)}")
        return msg.fds[0]

    def _vring_fd(self, msg: Message) -> tuple[int, int | None]:
        (value,) = _unpack(_U64, msg)
        index = value & _VRING_FD_INDEX_MASK
        self._vring(index)
        if value & _VRING_FD_NOFD:
            if msg.fds:
                raise RequestRefused(f"{_name(msg)}: NOFD flag set but {len(msg.fds)} fd(s) sent")
            return index, None
        return index, self._single_fd(msg, _name(msg))

    # ---------------------------------------------------------------- handlers
    # Each returns True when it appended its own reply (no REPLY_ACK then).

    def _get_features(self, msg: Message, effects: list[Effect]) -> bool:
        _expect_no_fds(msg, effects)
        offered = (self._device.features() | VHOST_USER_F_PROTOCOL_FEATURES) & ~VHOST_F_LOG_ALL
        effects.append(SendReply(_reply_u64(msg.request, offered)))
        return True

    def _set_features(self, msg: Message, effects: list[Effect]) -> bool:
        (value,) = _unpack(_U64, msg)
        offered = self._device.features() | VHOST_USER_F_PROTOCOL_FEATURES
        if value & ~offered:
            raise RequestRefused(f"SET_FEATURES acks unoffered bits {value & ~offered:#x}")
        _expect_no_fds(msg, effects)
        self._state.features = value
        self._state.features_set = True
        self._device.ack_features(value & ~VHOST_USER_F_PROTOCOL_FEATURES)
        if not value & VHOST_USER_F_PROTOCOL_FEATURES:
            # Without protocol features there is no SET_VRING_ENABLE: rings start enabled.
            for vring in self._state.vrings:
                vring.enabled = True
        return False

    def _get_protocol_features(self, msg: Message, effects: list[Effect]) -> bool:
        _expect_no_fds(msg, effects)
        effects.append(SendReply(_reply_u64(msg.request, int(OFFERED_PROTOCOL_FEATURES))))
        return True

    def _set_protocol_features(self, msg: Message, effects: list[Effect]) -> bool:
        (value,) = _unpack(_U64, msg)
        if value & ~OFFERED_PROTOCOL_FEATURES:
            raise RequestRefused(f"SET_PROTOCOL_FEATURES acks unoffered bits {value:#x}")
        _expect_no_fds(msg, effects)
        self._state.protocol_features = value
        return False

    def _set_owner(self, msg: Message, effects: list[Effect]) -> bool:
        _expect_no_fds(msg, effects)
        self._state.owner = True
        return False

    def _reset_owner(self, msg: Message, effects: list[Effect]) -> bool:
        # Deprecated; the spec recommends ignoring it or disabling the rings.  Disable.
        _expect_no_fds(msg, effects)
        for index, vring in enumerate(self._state.vrings):
            if vring.enabled:
                vring.enabled = False
                effects.append(VringEnable(index, False))
        return False

    def _get_queue_num(self, msg: Message, effects: list[Effect]) -> bool:
        _expect_no_fds(msg, effects)
        effects.append(SendReply(_reply_u64(msg.request, self._device.num_queues)))
        return True

    def _get_max_mem_slots(self, msg: Message, effects: list[Effect]) -> bool:
        _expect_no_fds(msg, effects)
        effects.append(SendReply(_reply_u64(msg.request, MAX_MEM_SLOTS)))
        return True

    def _set_mem_table(self, msg: Message, effects: list[Effect]) -> bool:
        if len(msg.payload) < _MEM_HEADER.size:
            raise MalformedMessage(f"SET_MEM_TABLE payload of {len(msg.payload)} bytes")
        nregions, _ = _MEM_HEADER.unpack_from(msg.payload)
        if nregions > MAX_FDS_PER_MESSAGE:
            raise MalformedMessage(f"SET_MEM_TABLE with {nregions} regions (max 8)")
        if len(msg.payload) < _MEM_HEADER.size + nregions * _MEM_REGION.size:
            raise MalformedMessage(f"SET_MEM_TABLE payload too short for {nregions} regions")
        if len(msg.fds) != nregions:
            raise RequestRefused(f"SET_MEM_TABLE: {nregions} regions but {len(msg.fds)} fds")
        regions = tuple(
            _region(_MEM_REGION.unpack_from(msg.payload, _MEM_HEADER.size + i * _MEM_REGION.size))
            for i in range(nregions)
        )
        effects.append(SetMemTable(regions, msg.fds))
        return False

    def _add_mem_reg(self, msg: Message, effects: list[Effect]) -> bool:
        self._require_protocol_feature(ProtocolFeature.CONFIGURE_MEM_SLOTS, "ADD_MEM_REG")
        _, *fields = _unpack(_MEM_REG_MSG, msg)
        fd = self._single_fd(msg, "ADD_MEM_REG")
        effects.append(AddMemRegion(_region(fields), fd))
        return False

    def _rem_mem_reg(self, msg: Message, effects: list[Effect]) -> bool:
        self._require_protocol_feature(ProtocolFeature.CONFIGURE_MEM_SLOTS, "REM_MEM_REG")
        _, *fields = _unpack(_MEM_REG_MSG, msg)
        # The spec allows (and says to close) one stray fd for old front-ends.
        _expect_no_fds(msg, effects)
        effects.append(RemoveMemRegion(_region(fields)))
        return False

    def _set_log(self, msg: Message, effects: list[Effect]) -> bool:
        # We never offer LOG_SHMFD nor VHOST_F_LOG_ALL, so dirty logging cannot work.
        raise _Unsupported(f"{_name(msg)}: dirty logging is not supported")

    def _set_vring_num(self, msg: Message, effects: list[Effect]) -> bool:
        index, num = _unpack(_VRING_STATE, msg)
        vring = self._vring(index)
        if num == 0 or num & (num - 1) or num > self._device.max_queue_size:
            raise RequestRefused(
                f"ring {index}: size {num} is not a power of two <= {self._device.max_queue_size}"
            )
        if vring.state is VringState.STARTED:
            raise RequestRefused(f"ring {index}: SET_VRING_NUM while started")
        _expect_no_fds(msg, effects)
        vring.size = num
        return False

    def _set_vring_addr(self, msg: Message, effects: list[Effect]) -> bool:
        index, _flags, desc, used, avail, _log = _unpack(_VRING_ADDR, msg)
        vring = self._vring(index)
        if vring.state is VringState.STARTED:
            raise RequestRefused(f"ring {index}: SET_VRING_ADDR while started")
        _expect_no_fds(msg, effects)
        vring.desc_user_addr, vring.used_user_addr, vring.avail_user_addr = desc, used, avail
        vring.addr_set = True
        return False

    def _set_vring_base(self, msg: Message, effects: list[Effect]) -> bool:
        index, num = _unpack(_VRING_STATE, msg)
        vring = self._vring(index)
        if num > 0xFFFF:
            raise RequestRefused(f"ring {index}: base {num} does not fit a split ring index")
        if vring.state is VringState.STARTED:
            raise RequestRefused(f"ring {index}: SET_VRING_BASE while started")
        _expect_no_fds(msg, effects)
        vring.base = num
        return False

    def _get_vring_base(self, msg: Message, effects: list[Effect]) -> bool:
        index, _ = _unpack(_VRING_STATE, msg)
        vring = self._vring(index)
        _expect_no_fds(msg, effects)
        was_started = vring.state is VringState.STARTED
        vring.state = vring_transition(vring.state, VringEvent.GET_BASE)
        if was_started:
            self._pending_stop = index
            effects.append(StopVring(index))
        else:
            effects.append(SendReply(_reply(msg.request, _VRING_STATE.pack(index, vring.base))))
        return True

    def _set_vring_kick(self, msg: Message, effects: list[Effect]) -> bool:
        index, fd = self._vring_fd(msg)
        vring = self._vring(index)
        if fd is None:
            raise RequestRefused(f"ring {index}: polling mode (no kick fd) is not supported")
        if vring.size == 0 or not vring.addr_set:
            raise RequestRefused(f"ring {index}: kick before SET_VRING_NUM/SET_VRING_ADDR")
        vring.state = vring_transition(vring.state, VringEvent.KICK)
        config = VringConfig(
            index=index,
            size=vring.size,
            desc_user_addr=vring.desc_user_addr,
            avail_user_addr=vring.avail_user_addr,
            used_user_addr=vring.used_user_addr,
            base=vring.base,
            event_idx=bool(self._state.features & VIRTIO_RING_F_EVENT_IDX),
            enabled=vring.enabled,
        )
        effects.append(StartVring(config, fd))
        return False

    def _set_vring_call(self, msg: Message, effects: list[Effect]) -> bool:
        index, fd = self._vring_fd(msg)
        effects.append(SetVringCall(index, fd))
        return False

    def _set_vring_err(self, msg: Message, effects: list[Effect]) -> bool:
        index, fd = self._vring_fd(msg)
        effects.append(SetVringErr(index, fd))
        return False

    def _set_vring_enable(self, msg: Message, effects: list[Effect]) -> bool:
        index, num = _unpack(_VRING_STATE, msg)
        vring = self._vring(index)
        if num not in (0, 1):
            raise RequestRefused(f"ring {index}: SET_VRING_ENABLE with {num}")
        _expect_no_fds(msg, effects)
        vring.enabled = bool(num)
        effects.append(VringEnable(index, vring.enabled))
        return False

    def _get_config(self, msg: Message, effects: list[Effect]) -> bool:
        self._require_protocol_feature(ProtocolFeature.CONFIG, "GET_CONFIG")
        offset, size, flags = _config_header(msg)
        _expect_no_fds(msg, effects)
        try:
            data = self._device.get_config(offset, size)
        except Exception as exc:  # the device refuses: an empty payload tells the front-end
            effects.append(Ignored(int(msg.request), f"device config read failed: {exc}"))
            effects.append(SendReply(_reply(msg.request, b"")))
            return True
        data = data[:size].ljust(size, b"\0")
        effects.append(
            SendReply(_reply(msg.request, _CONFIG_HEADER.pack(offset, size, flags) + data))
        )
        return True

    def _set_config(self, msg: Message, effects: list[Effect]) -> bool:
        self._require_protocol_feature(ProtocolFeature.CONFIG, "SET_CONFIG")
        offset, size, _flags = _config_header(msg)
        data = msg.payload[_CONFIG_HEADER.size : _CONFIG_HEADER.size + size]
        try:
            self._device.set_config(offset, data)
        except Exception as exc:
            raise RequestRefused(f"device refused config write: {exc}") from exc
        _expect_no_fds(msg, effects)
        return False

    def _set_backend_req_fd(self, msg: Message, effects: list[Effect]) -> bool:
        self._require_protocol_feature(ProtocolFeature.BACKEND_REQ, "SET_BACKEND_REQ_FD")
        effects.append(SetBackendReqFd(self._single_fd(msg, "SET_BACKEND_REQ_FD")))
        return False

    def _get_inflight_fd(self, msg: Message, effects: list[Effect]) -> bool:
        self._require_protocol_feature(ProtocolFeature.INFLIGHT_SHMFD, "GET_INFLIGHT_FD")
        _, _, num_queues, queue_size = _inflight(msg)
        if not 0 < num_queues <= self._device.num_queues:
            raise RequestRefused(f"GET_INFLIGHT_FD for {num_queues} queues")
        if not 0 < queue_size <= self._device.max_queue_size:
            raise RequestRefused(f"GET_INFLIGHT_FD for queue size {queue_size}")
        _expect_no_fds(msg, effects)
        size = inflight_region_size(num_queues, queue_size)
        reply = _reply(msg.request, _INFLIGHT.pack(size, 0, num_queues, queue_size))
        effects.append(AllocateInflight(size, num_queues, queue_size, reply))
        return True

    def _set_inflight_fd(self, msg: Message, effects: list[Effect]) -> bool:
        self._require_protocol_feature(ProtocolFeature.INFLIGHT_SHMFD, "SET_INFLIGHT_FD")
        mmap_size, mmap_offset, num_queues, queue_size = _inflight(msg)
        fd = self._single_fd(msg, "SET_INFLIGHT_FD")
        if not 0 < num_queues <= self._device.num_queues:
            raise RequestRefused(f"SET_INFLIGHT_FD for {num_queues} queues")
        if not 0 < queue_size <= self._device.max_queue_size:
            raise RequestRefused(f"SET_INFLIGHT_FD for queue size {queue_size}")
        if mmap_size < inflight_region_size(num_queues, queue_size):
            raise RequestRefused(f"SET_INFLIGHT_FD region of {mmap_size} bytes is too small")
        effects.append(SetInflightFd(fd, mmap_size, mmap_offset, num_queues, queue_size))
        return False

    def _unsupported(self, msg: Message, effects: list[Effect]) -> bool:
        raise _Unsupported(f"{_name(msg)} is not supported by this back-end")

    def reset(self) -> list[Effect]:
        """The connection is gone: every started ring stops (the server tears down)."""
        effects: list[Effect] = []
        for index, vring in enumerate(self._state.vrings):
            if vring.state is VringState.STARTED:
                effects.append(StopVring(index))
            vring.state = vring_transition(vring.state, VringEvent.RESET)
        self._pending_stop = None
        return effects


class _Unsupported(RequestRefused):
    """A known request we do not implement: refused, never fatal."""


_HANDLERS: Final[dict[int, Callable[[VhostUserBackend, Message, list[Effect]], bool]]] = {
    FrontendRequest.GET_FEATURES: VhostUserBackend._get_features,
    FrontendRequest.SET_FEATURES: VhostUserBackend._set_features,
    FrontendRequest.SET_OWNER: VhostUserBackend._set_owner,
    FrontendRequest.RESET_OWNER: VhostUserBackend._reset_owner,
    FrontendRequest.SET_MEM_TABLE: VhostUserBackend._set_mem_table,
    FrontendRequest.SET_LOG_BASE: VhostUserBackend._set_log,
    FrontendRequest.SET_LOG_FD: VhostUserBackend._set_log,
    FrontendRequest.SET_VRING_NUM: VhostUserBackend._set_vring_num,
    FrontendRequest.SET_VRING_ADDR: VhostUserBackend._set_vring_addr,
    FrontendRequest.SET_VRING_BASE: VhostUserBackend._set_vring_base,
    FrontendRequest.GET_VRING_BASE: VhostUserBackend._get_vring_base,
    FrontendRequest.SET_VRING_KICK: VhostUserBackend._set_vring_kick,
    FrontendRequest.SET_VRING_CALL: VhostUserBackend._set_vring_call,
    FrontendRequest.SET_VRING_ERR: VhostUserBackend._set_vring_err,
    FrontendRequest.GET_PROTOCOL_FEATURES: VhostUserBackend._get_protocol_features,
    FrontendRequest.SET_PROTOCOL_FEATURES: VhostUserBackend._set_protocol_features,
    FrontendRequest.GET_QUEUE_NUM: VhostUserBackend._get_queue_num,
    FrontendRequest.SET_VRING_ENABLE: VhostUserBackend._set_vring_enable,
    FrontendRequest.SET_BACKEND_REQ_FD: VhostUserBackend._set_backend_req_fd,
    FrontendRequest.GET_CONFIG: VhostUserBackend._get_config,
    FrontendRequest.SET_CONFIG: VhostUserBackend._set_config,
    FrontendRequest.GET_INFLIGHT_FD: VhostUserBackend._get_inflight_fd,
    FrontendRequest.SET_INFLIGHT_FD: VhostUserBackend._set_inflight_fd,
    FrontendRequest.GET_MAX_MEM_SLOTS: VhostUserBackend._get_max_mem_slots,
    FrontendRequest.ADD_MEM_REG: VhostUserBackend._add_mem_reg,
    FrontendRequest.REM_MEM_REG: VhostUserBackend._rem_mem_reg,
    FrontendRequest.SEND_RARP: VhostUserBackend._unsupported,
    FrontendRequest.NET_SET_MTU: VhostUserBackend._unsupported,
    FrontendRequest.IOTLB_MSG: VhostUserBackend._unsupported,
    FrontendRequest.SET_VRING_ENDIAN: VhostUserBackend._unsupported,
    FrontendRequest.POSTCOPY_ADVISE: VhostUserBackend._unsupported,
    FrontendRequest.POSTCOPY_LISTEN: VhostUserBackend._unsupported,
    FrontendRequest.POSTCOPY_END: VhostUserBackend._unsupported,
    FrontendRequest.RESET_DEVICE: VhostUserBackend._unsupported,
    FrontendRequest.VRING_KICK: VhostUserBackend._unsupported,
    FrontendRequest.SET_STATUS: VhostUserBackend._unsupported,
    FrontendRequest.GET_STATUS: VhostUserBackend._unsupported,
}


# --------------------------------------------------------------------------- decoding helpers


def _name(msg: Message) -> str:
    if isinstance(msg.request, FrontendRequest):
        return msg.request.name
    return f"request {msg.request}"


def _unpack(layout: struct.Struct, msg: Message) -> tuple[int, ...]:
    # Payloads may be longer than the struct (front-ends pad); shorter is malformed.
    if len(msg.payload) < layout.size:
        raise MalformedMessage(
            f"{_name(msg)}: payload of {len(msg.payload)} bytes, need {layout.size}"
        )
    values: tuple[int, ...] = layout.unpack_from(msg.payload)
    return values


def _region(fields: Sequence[int]) -> RegionDescription:
    gpa, size, uva, offset = fields
    return RegionDescription(gpa, size, uva, offset)


def _config_header(msg: Message) -> tuple[int, int, int]:
    offset, size, flags = _unpack(_CONFIG_HEADER, msg)
    if size > _MAX_CONFIG_SIZE or offset > _MAX_CONFIG_SIZE or offset + size > _MAX_CONFIG_SIZE:
        raise RequestRefused(f"{_name(msg)}: config access {offset}+{size} out of range")
    if len(msg.payload) != _CONFIG_HEADER.size + size:
        raise MalformedMessage(
            f"{_name(msg)}: payload of {len(msg.payload)} bytes for a {size}-byte access"
        )
    return offset, size, flags


def _inflight(msg: Message) -> tuple[int, int, int, int]:
    if len(msg.payload) < _INFLIGHT_MIN:
        raise MalformedMessage(f"{_name(msg)}: payload of {len(msg.payload)} bytes")
    padded = msg.payload[: _INFLIGHT.size].ljust(_INFLIGHT.size, b"\0")
    mmap_size, mmap_offset, num_queues, queue_size = _INFLIGHT.unpack(padded)
    return mmap_size, mmap_offset, num_queues, queue_size
