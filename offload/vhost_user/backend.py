"""The sans-I/O vhost-user back-end: a state machine from messages to effects.

How it works
------------
The object never touches a socket, an fd or a thread.  The session feeds it the
bytes and fds it received (``receive_data``) and pulls complete messages out
(``next_message``, framing by ``messages.MessageReader``).

``handle(message)`` checks the payload layout, updates the connection state and
returns a list of *effects* (``offload.vhost_user.effects``) for the session to
carry out, in order: replies are ``SendReply(data)`` with the encoded bytes, and
a REPLY_ACK acknowledgement (u64 0 = success) is appended whenever the
front-end set NEED_REPLY on a message that has no reply of its own; everything
that needs the outside world is a typed effect (``SetMemTable``, ``StartVring``
...).  Fds that a message should not carry come back as ``DiscardFds``.

Device questions with a synchronous answer (features, protocol features, queue
count, config space) are asked of the ``DeviceModel`` given to the constructor
(``offload.vhost_user.device``); the protocol features offered are the device's
wish intersected with ``SUPPORTED_PROTOCOL_FEATURES``, what this module
implements.

Errors: a message whose header or payload cannot be decoded raises
``MalformedMessage`` and the session closes that connection.  A well-formed
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from offload.vhost_user.device import DeviceModel
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
    VringConfig,
    VringEnable,
)
from offload.vhost_user.errors import (
    InvalidTransition,
    MalformedMessage,
    RequestRefused,
    UnknownRequest,
)
from offload.vhost_user.inflight import inflight_region_size
from offload.vhost_user.messages import (
    CONFIG_HEADER,
    INFLIGHT,
    MAX_FDS_PER_MESSAGE,
    MAX_MEM_SLOTS,
    MEM_HEADER,
    MEM_REG_MSG,
    MEM_REGION,
    U64,
    VHOST_F_LOG_ALL,
    VHOST_USER_F_PROTOCOL_FEATURES,
    VIRTIO_RING_F_EVENT_IDX,
    VRING_ADDR,
    VRING_FD_INDEX_MASK,
    VRING_FD_NOFD,
    VRING_STATE,
    FrontendRequest,
    Message,
    MessageReader,
    ProtocolFeature,
    config_header,
    inflight,
    region,
    reply,
    reply_u64,
    request_name,
    unpack,
)

__all__ = [
    "SUPPORTED_PROTOCOL_FEATURES",
    "VRING_TRANSITIONS",
    "VhostUserBackend",
    "VringEvent",
    "VringState",
    "vring_transition",
]

SUPPORTED_PROTOCOL_FEATURES: Final = (
    ProtocolFeature.MQ
    | ProtocolFeature.REPLY_ACK
    | ProtocolFeature.BACKEND_REQ
    | ProtocolFeature.CONFIG
    | ProtocolFeature.INFLIGHT_SHMFD
    | ProtocolFeature.CONFIGURE_MEM_SLOTS
)
"""Protocol features this module implements; a device offers a subset."""


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
        self._reader = MessageReader()
        self._pending_stop: int | None = None

    # ---------------------------------------------------------------- state and framing

    @property
    def protocol_features(self) -> int:
        return self._state.protocol_features

    @property
    def features(self) -> int:
        return self._state.features

    @property
    def offered_protocol_features(self) -> int:
        """What GET_PROTOCOL_FEATURES answers: the device's wish, within what we implement."""
        return self._device.protocol_features() & SUPPORTED_PROTOCOL_FEATURES

    def has_protocol_feature(self, feature: ProtocolFeature) -> bool:
        return bool(self._state.protocol_features & feature)

    def vring_state(self, index: int) -> VringState:
        return self._state.vrings[index].state

    @property
    def bytes_wanted(self) -> int:
        """How many more bytes complete the header, or the payload once the header is in."""
        return self._reader.bytes_wanted

    def receive_data(self, data: bytes, fds: Sequence[int] = ()) -> None:
        """Buffer bytes (and the fds that arrived with them) from the front-end."""
        self._reader.receive_data(data, fds)

    def take_pending_fds(self) -> tuple[int, ...]:
        """Fds received but not yet attached to a message (the server closes them)."""
        return self._reader.take_pending_fds()

    def next_message(self) -> Message | None:
        """The next complete message, or None (see ``MessageReader.next_message``)."""
        return self._reader.next_message()

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
                effects.append(SendReply(reply_u64(msg.request, 1)))
            elif isinstance(exc, UnknownRequest | _Unsupported):
                effects.append(Ignored(int(msg.request), str(exc)))
            else:
                raise
            return effects
        if msg.need_reply and not has_reply:
            effects.append(SendReply(reply_u64(msg.request, 0)))
        return effects

    def vring_base_reply(self, index: int, last_avail_idx: int) -> bytes:
        """The GET_VRING_BASE reply, once the server stopped ring ``index``."""
        if self._pending_stop != index:
            raise InvalidTransition(f"no GET_VRING_BASE pending for ring {index}")
        self._pending_stop = None
        self._state.vrings[index].base = last_avail_idx & 0xFFFF
        return reply(
            FrontendRequest.GET_VRING_BASE, VRING_STATE.pack(index, last_avail_idx & 0xFFFF)
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
        (value,) = unpack(U64, msg)
        index = value & VRING_FD_INDEX_MASK
        self._vring(index)
        if value & VRING_FD_NOFD:
            if msg.fds:
                raise RequestRefused(
                    f"{request_name(msg)}: NOFD flag set but {len(msg.fds)} fd(s) sent"
                )
            return index, None
        return index, self._single_fd(msg, request_name(msg))

    # ---------------------------------------------------------------- handlers
    # Each returns True when it appended its own reply (no REPLY_ACK then).

    def _get_features(self, msg: Message, effects: list[Effect]) -> bool:
        _expect_no_fds(msg, effects)
        offered = (self._device.features() | VHOST_USER_F_PROTOCOL_FEATURES) & ~VHOST_F_LOG_ALL
        effects.append(SendReply(reply_u64(msg.request, offered)))
        return True

    def _set_features(self, msg: Message, effects: list[Effect]) -> bool:
        (value,) = unpack(U64, msg)
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
        effects.append(SendReply(reply_u64(msg.request, self.offered_protocol_features)))
        return True

    def _set_protocol_features(self, msg: Message, effects: list[Effect]) -> bool:
        (value,) = unpack(U64, msg)
        if value & ~self.offered_protocol_features:
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
        effects.append(SendReply(reply_u64(msg.request, self._device.num_queues)))
        return True

    def _get_max_mem_slots(self, msg: Message, effects: list[Effect]) -> bool:
        _expect_no_fds(msg, effects)
        effects.append(SendReply(reply_u64(msg.request, MAX_MEM_SLOTS)))
        return True

    def _set_mem_table(self, msg: Message, effects: list[Effect]) -> bool:
        if len(msg.payload) < MEM_HEADER.size:
            raise MalformedMessage(f"SET_MEM_TABLE payload of {len(msg.payload)} bytes")
        nregions, _ = MEM_HEADER.unpack_from(msg.payload)
        if nregions > MAX_FDS_PER_MESSAGE:
            raise MalformedMessage(f"SET_MEM_TABLE with {nregions} regions (max 8)")
        if len(msg.payload) < MEM_HEADER.size + nregions * MEM_REGION.size:
            raise MalformedMessage(f"SET_MEM_TABLE payload too short for {nregions} regions")
        if len(msg.fds) != nregions:
            raise RequestRefused(f"SET_MEM_TABLE: {nregions} regions but {len(msg.fds)} fds")
        regions = tuple(
            region(MEM_REGION.unpack_from(msg.payload, MEM_HEADER.size + i * MEM_REGION.size))
            for i in range(nregions)
        )
        effects.append(SetMemTable(regions, msg.fds))
        return False

    def _add_mem_reg(self, msg: Message, effects: list[Effect]) -> bool:
        self._require_protocol_feature(ProtocolFeature.CONFIGURE_MEM_SLOTS, "ADD_MEM_REG")
        _, *fields = unpack(MEM_REG_MSG, msg)
        fd = self._single_fd(msg, "ADD_MEM_REG")
        effects.append(AddMemRegion(region(fields), fd))
        return False

    def _rem_mem_reg(self, msg: Message, effects: list[Effect]) -> bool:
        self._require_protocol_feature(ProtocolFeature.CONFIGURE_MEM_SLOTS, "REM_MEM_REG")
        _, *fields = unpack(MEM_REG_MSG, msg)
        # The spec allows (and says to close) one stray fd for old front-ends.
        _expect_no_fds(msg, effects)
        effects.append(RemoveMemRegion(region(fields)))
        return False

    def _set_log(self, msg: Message, effects: list[Effect]) -> bool:
        # We never offer LOG_SHMFD nor VHOST_F_LOG_ALL, so dirty logging cannot work.
        raise _Unsupported(f"{request_name(msg)}: dirty logging is not supported")

    def _set_vring_num(self, msg: Message, effects: list[Effect]) -> bool:
        index, num = unpack(VRING_STATE, msg)
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
        index, _flags, desc, used, avail, _log = unpack(VRING_ADDR, msg)
        vring = self._vring(index)
        if vring.state is VringState.STARTED:
            raise RequestRefused(f"ring {index}: SET_VRING_ADDR while started")
        _expect_no_fds(msg, effects)
        vring.desc_user_addr, vring.used_user_addr, vring.avail_user_addr = desc, used, avail
        vring.addr_set = True
        return False

    def _set_vring_base(self, msg: Message, effects: list[Effect]) -> bool:
        index, num = unpack(VRING_STATE, msg)
        vring = self._vring(index)
        if num > 0xFFFF:
            raise RequestRefused(f"ring {index}: base {num} does not fit a split ring index")
        if vring.state is VringState.STARTED:
            raise RequestRefused(f"ring {index}: SET_VRING_BASE while started")
        _expect_no_fds(msg, effects)
        vring.base = num
        return False

    def _get_vring_base(self, msg: Message, effects: list[Effect]) -> bool:
        index, _ = unpack(VRING_STATE, msg)
        vring = self._vring(index)
        _expect_no_fds(msg, effects)
        was_started = vring.state is VringState.STARTED
        vring.state = vring_transition(vring.state, VringEvent.GET_BASE)
        if was_started:
            self._pending_stop = index
            effects.append(StopVring(index))
        else:
            effects.append(SendReply(reply(msg.request, VRING_STATE.pack(index, vring.base))))
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
        index, num = unpack(VRING_STATE, msg)
        vring = self._vring(index)
        if num not in (0, 1):
            raise RequestRefused(f"ring {index}: SET_VRING_ENABLE with {num}")
        _expect_no_fds(msg, effects)
        vring.enabled = bool(num)
        effects.append(VringEnable(index, vring.enabled))
        return False

    def _get_config(self, msg: Message, effects: list[Effect]) -> bool:
        self._require_protocol_feature(ProtocolFeature.CONFIG, "GET_CONFIG")
        offset, size, flags = config_header(msg)
        _expect_no_fds(msg, effects)
        try:
            data = self._device.get_config(offset, size)
        except Exception as exc:  # the device refuses: an empty payload tells the front-end
            effects.append(Ignored(int(msg.request), f"device config read failed: {exc}"))
            effects.append(SendReply(reply(msg.request, b"")))
            return True
        data = data[:size].ljust(size, b"\0")
        effects.append(
            SendReply(reply(msg.request, CONFIG_HEADER.pack(offset, size, flags) + data))
        )
        return True

    def _set_config(self, msg: Message, effects: list[Effect]) -> bool:
        self._require_protocol_feature(ProtocolFeature.CONFIG, "SET_CONFIG")
        offset, size, _flags = config_header(msg)
        data = msg.payload[CONFIG_HEADER.size : CONFIG_HEADER.size + size]
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
        _, _, num_queues, queue_size = inflight(msg)
        if not 0 < num_queues <= self._device.num_queues:
            raise RequestRefused(f"GET_INFLIGHT_FD for {num_queues} queues")
        if not 0 < queue_size <= self._device.max_queue_size:
            raise RequestRefused(f"GET_INFLIGHT_FD for queue size {queue_size}")
        _expect_no_fds(msg, effects)
        size = inflight_region_size(num_queues, queue_size)
        answer = reply(msg.request, INFLIGHT.pack(size, 0, num_queues, queue_size))
        effects.append(AllocateInflight(size, num_queues, queue_size, answer))
        return True

    def _set_inflight_fd(self, msg: Message, effects: list[Effect]) -> bool:
        self._require_protocol_feature(ProtocolFeature.INFLIGHT_SHMFD, "SET_INFLIGHT_FD")
        mmap_size, mmap_offset, num_queues, queue_size = inflight(msg)
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
        raise _Unsupported(f"{request_name(msg)} is not supported by this back-end")

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
