"""The sans-I/O vhost-user protocol: codec and state machine, no sockets, fake fds."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload.vhost_user.backend import (
    SUPPORTED_PROTOCOL_FEATURES,
    VRING_TRANSITIONS,
    VhostUserBackend,
    VringEvent,
    VringState,
    vring_transition,
)
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
    InvalidTransition,
    MalformedMessage,
    RequestRefused,
    VhostUserError,
)
from offload.vhost_user.inflight import inflight_region_size
from offload.vhost_user.messages import (
    HEADER,
    MAX_PAYLOAD,
    VHOST_USER_F_PROTOCOL_FEATURES,
    BackendRequest,
    Flags,
    FrontendRequest,
    Message,
    ProtocolFeature,
    RegionDescription,
    encode_backend_request,
    encode_message,
)

OFFERED_PROTOCOL_FEATURES = SUPPORTED_PROTOCOL_FEATURES

R = FrontendRequest
VERSION_1 = 1 << 32
EVENT_IDX = 1 << 29
CONFIG_LEN = 60
U64 = struct.Struct("=Q")
STATE = struct.Struct("=II")
ADDR = struct.Struct("=IIQQQQ")
CONFIG_HDR = struct.Struct("=III")
INFLIGHT = struct.Struct("=QQHH4x")


class FakeDevice:
    num_queues = 2
    max_queue_size = 1024

    def __init__(self) -> None:
        self.offered_protocol_features = SUPPORTED_PROTOCOL_FEATURES
        self.acked: int | None = None
        self.config = bytearray(range(CONFIG_LEN))
        self.writes: list[tuple[int, bytes]] = []

    def features(self) -> int:
        return VERSION_1 | EVENT_IDX | (1 << 9)

    def protocol_features(self) -> int:
        return int(self.offered_protocol_features)

    def ack_features(self, features: int) -> None:
        self.acked = features

    def get_config(self, offset: int, size: int) -> bytes:
        return bytes(self.config[offset : offset + size])

    def set_config(self, offset: int, data: bytes) -> None:
        if offset != 32:
            raise ValueError("read-only field")
        self.writes.append((offset, data))


@pytest.fixture
def device() -> FakeDevice:
    return FakeDevice()


@pytest.fixture
def proto(device: FakeDevice) -> VhostUserBackend:
    return VhostUserBackend(device)


def msg(
    request: int, payload: bytes = b"", *, fds: tuple[int, ...] = (), need_reply: bool = False
) -> Message:
    flags = Flags.VERSION | (Flags.NEED_REPLY if need_reply else 0)
    return Message(request, flags, payload, fds)


def replies(effects: list[Effect]) -> list[bytes]:
    return [e.data for e in effects if isinstance(e, SendReply)]


def decode_reply(data: bytes) -> tuple[int, int, bytes]:
    request, flags, size = HEADER.unpack_from(data)
    assert flags == Flags.VERSION | Flags.REPLY
    assert len(data) == HEADER.size + size
    return request, size, data[HEADER.size :]


def reply_u64(effects: list[Effect]) -> int:
    [data] = replies(effects)
    _, size, payload = decode_reply(data)
    assert size == 8
    return int(U64.unpack(payload)[0])


def negotiate(proto: VhostUserBackend, protocol_features: int = OFFERED_PROTOCOL_FEATURES) -> None:
    proto.handle(msg(R.SET_FEATURES, U64.pack(VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES)))
    proto.handle(msg(R.SET_PROTOCOL_FEATURES, U64.pack(protocol_features)))


def setup_ring(proto: VhostUserBackend, index: int = 0, size: int = 128) -> None:
    proto.handle(msg(R.SET_VRING_NUM, STATE.pack(index, size)))
    proto.handle(msg(R.SET_VRING_BASE, STATE.pack(index, 7)))
    proto.handle(msg(R.SET_VRING_ADDR, ADDR.pack(index, 0, 0x1000, 0x3000, 0x2000, 0)))


# --------------------------------------------------------------------------- framing


def test_framing_reassembles_split_messages_and_attaches_fds(proto: VhostUserBackend) -> None:
    wire = encode_message(R.SET_VRING_CALL, U64.pack(1)) + encode_message(R.GET_FEATURES)
    assert proto.bytes_wanted == HEADER.size
    proto.receive_data(wire[:5], [10])
    assert proto.next_message() is None
    assert proto.bytes_wanted == HEADER.size - 5
    proto.receive_data(wire[5:12])
    assert proto.bytes_wanted == 8
    proto.receive_data(wire[12:20])
    first = proto.next_message()
    assert first == Message(R.SET_VRING_CALL, Flags.VERSION, U64.pack(1), (10,))
    proto.receive_data(wire[20:])
    second = proto.next_message()
    assert second is not None and second.request is R.GET_FEATURES and second.fds == ()
    assert proto.next_message() is None


def test_unknown_request_code_decodes_as_int(proto: VhostUserBackend) -> None:
    proto.receive_data(encode_message(999, b"abc"))
    m = proto.next_message()
    assert m is not None and m.request == 999 and not isinstance(m.request, FrontendRequest)


@pytest.mark.parametrize(
    "flags",
    [0x0, 0x2, 0x3, Flags.VERSION | Flags.REPLY],
    ids=["version0", "version2", "version3", "reply-flag"],
)
def test_bad_flags_are_malformed(proto: VhostUserBackend, flags: int) -> None:
    proto.receive_data(HEADER.pack(R.GET_FEATURES, flags, 0), [5])
    with pytest.raises(MalformedMessage):
        proto.next_message()
    assert proto.take_pending_fds() == (5,)


def test_oversized_payload_is_malformed(proto: VhostUserBackend) -> None:
    proto.receive_data(HEADER.pack(R.SET_MEM_TABLE, Flags.VERSION, MAX_PAYLOAD + 1))
    assert proto.bytes_wanted > 0  # never asks for more than MAX_PAYLOAD
    with pytest.raises(MalformedMessage):
        proto.next_message()


@pytest.mark.parametrize(
    "request_",
    [R.SET_FEATURES, R.SET_VRING_NUM, R.SET_VRING_ADDR, R.SET_VRING_CALL, R.GET_CONFIG],
)
def test_short_payloads_are_malformed(proto: VhostUserBackend, request_: R) -> None:
    negotiate(proto)
    with pytest.raises(MalformedMessage):
        proto.handle(msg(request_, b"\x01\x02"))


def test_backend_request_encoding() -> None:
    data = encode_backend_request(BackendRequest.CONFIG_CHANGE_MSG, need_reply=True)
    assert HEADER.unpack(data) == (2, Flags.VERSION | Flags.NEED_REPLY, 0)
    data = encode_backend_request(BackendRequest.CONFIG_CHANGE_MSG, need_reply=False)
    assert HEADER.unpack(data) == (2, Flags.VERSION, 0)


# --------------------------------------------------------------------------- negotiation


def test_get_features_adds_protocol_features_bit(proto: VhostUserBackend) -> None:
    effects = proto.handle(msg(R.GET_FEATURES))
    value = reply_u64(effects)
    assert value & VHOST_USER_F_PROTOCOL_FEATURES
    assert value & VERSION_1 and value & EVENT_IDX
    assert not value & (1 << 26)  # no VHOST_F_LOG_ALL


def test_get_protocol_features_offers_exactly_the_planned_set(proto: VhostUserBackend) -> None:
    value = reply_u64(proto.handle(msg(R.GET_PROTOCOL_FEATURES)))
    assert value == (1 << 0) | (1 << 3) | (1 << 5) | (1 << 9) | (1 << 12) | (1 << 15)


def test_set_features_acks_device_without_protocol_bit(
    proto: VhostUserBackend, device: FakeDevice
) -> None:
    assert (
        proto.handle(msg(R.SET_FEATURES, U64.pack(VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES)))
        == []
    )
    assert device.acked == VERSION_1
    assert proto.features == VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES


def test_set_features_with_unoffered_bit_is_refused(proto: VhostUserBackend) -> None:
    effects = proto.handle(msg(R.SET_FEATURES, U64.pack(1 << 26), need_reply=True))
    assert reply_u64(effects) == 1
    with pytest.raises(RequestRefused):
        proto.handle(msg(R.SET_FEATURES, U64.pack(1 << 26)))


def test_set_protocol_features_records_and_refuses_unoffered(proto: VhostUserBackend) -> None:
    proto.handle(msg(R.SET_PROTOCOL_FEATURES, U64.pack(ProtocolFeature.REPLY_ACK)))
    assert proto.has_protocol_feature(ProtocolFeature.REPLY_ACK)
    assert not proto.has_protocol_feature(ProtocolFeature.CONFIG)
    effects = proto.handle(
        msg(R.SET_PROTOCOL_FEATURES, U64.pack(ProtocolFeature.LOG_SHMFD), need_reply=True)
    )
    assert reply_u64(effects) == 1
    assert proto.protocol_features == ProtocolFeature.REPLY_ACK


@pytest.mark.parametrize(
    ("request_", "expected"),
    [(R.GET_QUEUE_NUM, 2), (R.GET_MAX_MEM_SLOTS, 32)],
)
def test_simple_queries(proto: VhostUserBackend, request_: R, expected: int) -> None:
    assert reply_u64(proto.handle(msg(request_))) == expected


def test_need_reply_gets_an_ack_only_when_there_is_no_reply(proto: VhostUserBackend) -> None:
    assert reply_u64(proto.handle(msg(R.SET_OWNER, need_reply=True))) == 0
    assert proto.handle(msg(R.SET_OWNER)) == []
    # A request with a reply of its own gets exactly that reply.
    effects = proto.handle(msg(R.GET_QUEUE_NUM, need_reply=True))
    assert len(replies(effects)) == 1


def test_reply_echoes_the_request_code(proto: VhostUserBackend) -> None:
    [data] = replies(proto.handle(msg(R.SET_OWNER, need_reply=True)))
    assert decode_reply(data)[0] == R.SET_OWNER


# --------------------------------------------------------------------------- memory


def test_set_mem_table_hands_over_regions_and_fds(proto: VhostUserBackend) -> None:
    regions = [
        RegionDescription(0, 0x1000, 0x7F0000, 0),
        RegionDescription(0x10000, 0x2000, 0x800000, 0x1000),
    ]
    payload = struct.pack("=II", 2, 0) + b"".join(
        struct.pack("=QQQQ", r.guest_phys_addr, r.size, r.user_addr, r.mmap_offset) for r in regions
    )
    effects = proto.handle(msg(R.SET_MEM_TABLE, payload, fds=(20, 21), need_reply=True))
    assert effects[0] == SetMemTable(tuple(regions), (20, 21))
    assert reply_u64(effects) == 0


def test_set_mem_table_fd_count_mismatch_is_refused(proto: VhostUserBackend) -> None:
    payload = struct.pack("=II", 1, 0) + struct.pack("=QQQQ", 0, 0x1000, 0, 0)
    effects = proto.handle(msg(R.SET_MEM_TABLE, payload, fds=(3, 4), need_reply=True))
    assert effects[0] == DiscardFds((3, 4))
    assert reply_u64(effects) == 1


@pytest.mark.parametrize("nregions", [9, 1000])
def test_set_mem_table_too_many_or_truncated_regions(
    proto: VhostUserBackend, nregions: int
) -> None:
    with pytest.raises(MalformedMessage):
        proto.handle(msg(R.SET_MEM_TABLE, struct.pack("=II", nregions, 0)))


def test_add_and_remove_mem_region(proto: VhostUserBackend) -> None:
    payload = struct.pack("=QQQQQ", 0, 0x100000, 0x2000, 0x7F000000, 0x4000)
    region = RegionDescription(0x100000, 0x2000, 0x7F000000, 0x4000)
    # Not negotiated: refused.
    assert reply_u64(proto.handle(msg(R.ADD_MEM_REG, payload, fds=(9,), need_reply=True))) == 1
    negotiate(proto)
    effects = proto.handle(msg(R.ADD_MEM_REG, payload, fds=(9,), need_reply=True))
    assert effects[0] == AddMemRegion(region, 9)
    assert reply_u64(effects) == 0
    # A stray fd on REM_MEM_REG is tolerated and closed.
    effects = proto.handle(msg(R.REM_MEM_REG, payload, fds=(11,)))
    assert effects == [DiscardFds((11,)), RemoveMemRegion(region)]


# --------------------------------------------------------------------------- vrings


def test_ring_starts_on_kick_and_stops_on_get_vring_base(proto: VhostUserBackend) -> None:
    negotiate(proto)
    setup_ring(proto, 1, 256)
    [start] = proto.handle(msg(R.SET_VRING_KICK, U64.pack(1), fds=(30,)))
    assert isinstance(start, StartVring)
    assert start.kick_fd == 30
    cfg = start.config
    assert (cfg.index, cfg.size, cfg.base) == (1, 256, 7)
    assert (cfg.desc_user_addr, cfg.used_user_addr, cfg.avail_user_addr) == (0x1000, 0x3000, 0x2000)
    assert cfg.enabled is False  # protocol features negotiated: wait for SET_VRING_ENABLE
    assert cfg.event_idx is False
    assert proto.vring_state(1) is VringState.STARTED

    assert proto.handle(msg(R.GET_VRING_BASE, STATE.pack(1, 0))) == [StopVring(1)]
    # Nothing else may be handled until the server answered.
    with pytest.raises(InvalidTransition):
        proto.handle(msg(R.GET_FEATURES))
    _, _, payload = decode_reply(proto.vring_base_reply(1, 0x1_0042))
    assert STATE.unpack(payload) == (1, 0x42)
    assert proto.vring_state(1) is VringState.STOPPED
    # A stopped ring answers with the base it has.
    [data] = replies(proto.handle(msg(R.GET_VRING_BASE, STATE.pack(1, 0))))
    assert STATE.unpack(decode_reply(data)[2]) == (1, 0x42)


def test_vring_base_reply_without_pending_stop(proto: VhostUserBackend) -> None:
    with pytest.raises(InvalidTransition):
        proto.vring_base_reply(0, 1)


def test_without_protocol_features_rings_start_enabled(proto: VhostUserBackend) -> None:
    proto.handle(msg(R.SET_FEATURES, U64.pack(VERSION_1 | EVENT_IDX)))
    setup_ring(proto)
    [start] = proto.handle(msg(R.SET_VRING_KICK, U64.pack(0), fds=(30,)))
    assert isinstance(start, StartVring)
    assert start.config.enabled and start.config.event_idx


def test_set_vring_enable(proto: VhostUserBackend) -> None:
    negotiate(proto)
    assert proto.handle(msg(R.SET_VRING_ENABLE, STATE.pack(1, 1))) == [VringEnable(1, True)]
    setup_ring(proto, 1)
    [start] = proto.handle(msg(R.SET_VRING_KICK, U64.pack(1), fds=(5,)))
    assert isinstance(start, StartVring) and start.config.enabled
    assert reply_u64(proto.handle(msg(R.SET_VRING_ENABLE, STATE.pack(1, 2), need_reply=True))) == 1


@pytest.mark.parametrize("size", [0, 3, 100, 2048])
def test_bad_ring_size_is_refused(proto: VhostUserBackend, size: int) -> None:
    effects = proto.handle(msg(R.SET_VRING_NUM, STATE.pack(0, size), need_reply=True))
    assert reply_u64(effects) == 1


@pytest.mark.parametrize(
    "request_", [R.SET_VRING_NUM, R.SET_VRING_BASE, R.GET_VRING_BASE, R.SET_VRING_ENABLE]
)
def test_ring_index_out_of_range_is_refused(proto: VhostUserBackend, request_: R) -> None:
    effects = proto.handle(msg(request_, STATE.pack(2, 64), need_reply=True))
    assert reply_u64(effects) == 1
    with pytest.raises(RequestRefused):
        proto.handle(msg(request_, STATE.pack(2, 64)))


def test_ring_config_cannot_change_while_started(proto: VhostUserBackend) -> None:
    negotiate(proto)
    setup_ring(proto)
    proto.handle(msg(R.SET_VRING_KICK, U64.pack(0), fds=(5,)))
    assert reply_u64(proto.handle(msg(R.SET_VRING_NUM, STATE.pack(0, 64), need_reply=True))) == 1
    assert reply_u64(proto.handle(msg(R.SET_VRING_BASE, STATE.pack(0, 1), need_reply=True))) == 1


def test_kick_before_ring_is_configured_is_refused(proto: VhostUserBackend) -> None:
    effects = proto.handle(msg(R.SET_VRING_KICK, U64.pack(0), fds=(5,), need_reply=True))
    assert effects == [DiscardFds((5,)), SendReply(effects[1].data)]  # type: ignore[union-attr]
    assert reply_u64(effects[1:]) == 1


def test_kick_without_fd_polling_is_refused(proto: VhostUserBackend) -> None:
    setup_ring(proto)
    assert reply_u64(proto.handle(msg(R.SET_VRING_KICK, U64.pack(0x100), need_reply=True))) == 1


def test_call_and_err_fds(proto: VhostUserBackend) -> None:
    assert proto.handle(msg(R.SET_VRING_CALL, U64.pack(1), fds=(40,))) == [SetVringCall(1, 40)]
    assert proto.handle(msg(R.SET_VRING_CALL, U64.pack(0x101))) == [SetVringCall(1, None)]
    assert proto.handle(msg(R.SET_VRING_ERR, U64.pack(0), fds=(41,))) == [SetVringErr(0, 41)]
    # NOFD flag with an fd, or no fd without the flag: refused, fd closed.
    effects = proto.handle(msg(R.SET_VRING_CALL, U64.pack(0x100), fds=(42,), need_reply=True))
    assert effects[0] == DiscardFds((42,)) and reply_u64(effects[1:]) == 1
    assert reply_u64(proto.handle(msg(R.SET_VRING_CALL, U64.pack(0), need_reply=True))) == 1


def test_reset_stops_started_rings(proto: VhostUserBackend) -> None:
    negotiate(proto)
    setup_ring(proto, 0)
    proto.handle(msg(R.SET_VRING_KICK, U64.pack(0), fds=(5,)))
    assert proto.reset() == [StopVring(0)]
    assert proto.vring_state(0) is VringState.STOPPED


def test_reset_owner_disables_enabled_rings(proto: VhostUserBackend) -> None:
    negotiate(proto)
    proto.handle(msg(R.SET_VRING_ENABLE, STATE.pack(0, 1)))
    assert proto.handle(msg(R.RESET_OWNER)) == [VringEnable(0, False)]


def test_vring_transition_table_every_edge() -> None:
    for state, edges in VRING_TRANSITIONS.items():
        for event, target in edges.items():
            assert vring_transition(state, event) is target
    assert set(VRING_TRANSITIONS) == set(VringState)
    for edges in VRING_TRANSITIONS.values():
        assert set(edges) == set(VringEvent)


# --------------------------------------------------------------------------- config


def test_get_config_reply_matches_request_size(proto: VhostUserBackend) -> None:
    negotiate(proto)
    payload = CONFIG_HDR.pack(0, CONFIG_LEN, 0) + bytes(CONFIG_LEN)
    [data] = replies(proto.handle(msg(R.GET_CONFIG, payload)))
    request, size, body = decode_reply(data)
    assert request == R.GET_CONFIG and size == 12 + CONFIG_LEN
    assert CONFIG_HDR.unpack_from(body) == (0, CONFIG_LEN, 0)
    assert body[12:] == bytes(range(CONFIG_LEN))


def test_get_config_pads_past_device_config(proto: VhostUserBackend) -> None:
    negotiate(proto)
    payload = CONFIG_HDR.pack(56, 8, 0) + bytes(8)
    [data] = replies(proto.handle(msg(R.GET_CONFIG, payload)))
    assert decode_reply(data)[2][12:] == bytes([56, 57, 58, 59, 0, 0, 0, 0])


def test_get_config_checks(proto: VhostUserBackend) -> None:
    payload = CONFIG_HDR.pack(0, 8, 0) + bytes(8)
    assert reply_u64(proto.handle(msg(R.GET_CONFIG, payload, need_reply=True))) == 1
    negotiate(proto)
    with pytest.raises(MalformedMessage):  # size field disagrees with the payload
        proto.handle(msg(R.GET_CONFIG, CONFIG_HDR.pack(0, 8, 0) + bytes(4)))
    big = CONFIG_HDR.pack(250, 16, 0) + bytes(16)
    assert reply_u64(proto.handle(msg(R.GET_CONFIG, big, need_reply=True))) == 1


def test_set_config(proto: VhostUserBackend, device: FakeDevice) -> None:
    negotiate(proto)
    ok = CONFIG_HDR.pack(32, 1, 0) + b"\x01"
    assert reply_u64(proto.handle(msg(R.SET_CONFIG, ok, need_reply=True))) == 0
    assert device.writes == [(32, b"\x01")]
    bad = CONFIG_HDR.pack(0, 8, 0) + bytes(8)
    assert reply_u64(proto.handle(msg(R.SET_CONFIG, bad, need_reply=True))) == 1


# --------------------------------------------------------------------------- channels, inflight


def test_backend_req_fd(proto: VhostUserBackend) -> None:
    assert reply_u64(proto.handle(msg(R.SET_BACKEND_REQ_FD, fds=(50,), need_reply=True))) == 1
    negotiate(proto)
    effects = proto.handle(msg(R.SET_BACKEND_REQ_FD, fds=(50,), need_reply=True))
    assert effects[0] == SetBackendReqFd(50) and reply_u64(effects[1:]) == 0


def test_get_inflight_fd(proto: VhostUserBackend) -> None:
    negotiate(proto)
    [effect] = proto.handle(msg(R.GET_INFLIGHT_FD, INFLIGHT.pack(0, 0, 2, 128)))
    assert isinstance(effect, AllocateInflight)
    size = inflight_region_size(2, 128)
    assert (effect.mmap_size, effect.num_queues, effect.queue_size) == (size, 2, 128)
    request, length, body = decode_reply(effect.reply)
    assert request == R.GET_INFLIGHT_FD and length == 24
    assert INFLIGHT.unpack(body) == (size, 0, 2, 128)


def test_get_inflight_fd_checks(proto: VhostUserBackend) -> None:
    payload = INFLIGHT.pack(0, 0, 2, 128)
    assert reply_u64(proto.handle(msg(R.GET_INFLIGHT_FD, payload, need_reply=True))) == 1
    negotiate(proto)
    for nq, qs in [(3, 128), (0, 128), (2, 0), (2, 4096)]:
        bad = INFLIGHT.pack(0, 0, nq, qs)
        assert reply_u64(proto.handle(msg(R.GET_INFLIGHT_FD, bad, need_reply=True))) == 1


def test_set_inflight_fd(proto: VhostUserBackend) -> None:
    negotiate(proto)
    size = inflight_region_size(2, 128)
    effects = proto.handle(msg(R.SET_INFLIGHT_FD, INFLIGHT.pack(size, 64, 2, 128), fds=(60,)))
    assert effects == [SetInflightFd(60, size, 64, 2, 128)]
    # Packed 20-byte variant is accepted too.
    packed = struct.pack("=QQHH", size, 0, 2, 128)
    [eff] = proto.handle(msg(R.SET_INFLIGHT_FD, packed, fds=(61,)))
    assert isinstance(eff, SetInflightFd) and eff.fd == 61
    small = INFLIGHT.pack(size - 64, 0, 2, 128)
    effects = proto.handle(msg(R.SET_INFLIGHT_FD, small, fds=(62,), need_reply=True))
    assert effects[0] == DiscardFds((62,)) and reply_u64(effects[1:]) == 1


# --------------------------------------------------------------------------- refusals


def test_dirty_log_requests_are_refused_cleanly(proto: VhostUserBackend) -> None:
    effects = proto.handle(msg(R.SET_LOG_BASE, U64.pack(0) * 2, fds=(70,)))
    assert effects[0] == DiscardFds((70,))
    assert isinstance(effects[1], Ignored)
    effects = proto.handle(msg(R.SET_LOG_FD, fds=(71,), need_reply=True))
    assert effects[0] == DiscardFds((71,)) and reply_u64(effects[1:]) == 1


def test_unknown_request_is_refused_not_fatal(proto: VhostUserBackend) -> None:
    assert reply_u64(proto.handle(msg(999, b"xyz", need_reply=True))) == 1
    [ignored] = proto.handle(msg(999))
    assert isinstance(ignored, Ignored) and ignored.request == 999
    # The connection state is intact afterwards.
    assert reply_u64(proto.handle(msg(R.GET_QUEUE_NUM))) == 2


# --------------------------------------------------------------------------- garbage


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_bytes_never_escape_the_error_tree(data: bytes) -> None:
    proto = VhostUserBackend(FakeDevice())
    proto.receive_data(data, [3])
    try:
        while (m := proto.next_message()) is not None:
            with contextlib.suppress(RequestRefused, InvalidTransition):
                proto.handle(m)
    except VhostUserError:
        pass


@settings(max_examples=500, deadline=None)
@given(
    request=st.sampled_from([*FrontendRequest, 0, 41, 1000, 2**32 - 1]),
    payload=st.binary(max_size=300),
    nfds=st.integers(0, 3),
    need_reply=st.booleans(),
    negotiated=st.booleans(),
)
def test_any_message_yields_effects_or_a_vhost_user_error(
    request: int, payload: bytes, nfds: int, need_reply: bool, negotiated: bool
) -> None:
    proto = VhostUserBackend(FakeDevice())
    if negotiated:
        negotiate(proto)
    fds = tuple(range(100, 100 + nfds))
    try:
        effects = proto.handle(msg(request, payload, fds=fds, need_reply=need_reply))
    except VhostUserError:
        return
    for effect in effects:
        if isinstance(effect, SendReply):
            _, flags, size = HEADER.unpack_from(effect.data)
            assert flags == Flags.VERSION | Flags.REPLY and len(effect.data) == 12 + size
    if need_reply and not isinstance(effects[-1], (StopVring, AllocateInflight)):
        assert isinstance(effects[-1], SendReply)


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(
        st.tuples(st.sampled_from(list(FrontendRequest)), st.binary(max_size=64)),
        min_size=1,
        max_size=6,
    ),
    cuts=st.lists(st.integers(1, 40), max_size=30),
)
def test_framing_is_independent_of_how_bytes_arrive(
    messages: list[tuple[FrontendRequest, bytes]], cuts: list[int]
) -> None:
    wire = b"".join(encode_message(req, payload) for req, payload in messages)
    proto = VhostUserBackend(FakeDevice())
    out: list[Message] = []
    pos = 0
    for n in [*cuts, len(wire)]:
        proto.receive_data(wire[pos : pos + n])
        pos += n
        while (m := proto.next_message()) is not None:
            out.append(m)
        if pos >= len(wire):
            break
    assert [(m.request, m.payload) for m in out] == messages
    assert proto.bytes_wanted == HEADER.size
