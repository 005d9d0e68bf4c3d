"""vhost-user messages: the sans-I/O ``VhostUserBackend`` fed a front-end's byte stream.

The input's first byte picks the device behind the protocol (bit 0: a
virtio-net device, else virtio-blk); the rest is a sequence of records
``u8 fds, u16 length, bytes`` (at most 64): each record's bytes arrive as
one ``recvmsg`` with ``fds % 9`` file descriptors.  The descriptors are
made-up numbers: the protocol object never touches them, it only says in
its effects what the session should do with them.

After each record the target pulls every complete message and handles it
as the session would: a GET_VRING_BASE is answered with
``vring_base_reply`` once the (imaginary) ring stopped.  The back-end may
refuse the stream with a ``VhostUserError`` (the session then closes the
connection, and so does the target); anything else is a crash.  Every reply
must be a well-formed reply (REPLY flag, version 1, its declared size), and
no effect may name an fd that did not arrive with its message.
"""

from __future__ import annotations

import os
import socket
import struct
import tempfile
from collections.abc import Callable
from typing import Final

from offload.devices.base import DeviceBackend
from offload.devices.blk import BlkDevice
from offload.devices.net import NetDevice
from offload.storage.volume import SparseFileVolume
from offload.vhost_user.backend import VhostUserBackend
from offload.vhost_user.effects import (
    AddMemRegion,
    DiscardFds,
    Effect,
    SendReply,
    SetBackendReqFd,
    SetInflightFd,
    SetMemTable,
    SetVringCall,
    SetVringErr,
    StartVring,
    StopVring,
)
from offload.vhost_user.errors import VhostUserError

__all__ = ["MAX_LEN", "make", "seeds"]

MAX_LEN: Final = 8192
MAX_RECORDS: Final = 64
FAKE_FD_BASE: Final = 10_000
_RECORD = struct.Struct("<BH")
_HEADER = struct.Struct("=III")
_REPLY_FLAGS: Final = 0x1 | 0x4


def _fds_of(effect: Effect) -> tuple[int, ...]:
    if isinstance(effect, SetMemTable | DiscardFds):
        return effect.fds
    if isinstance(effect, AddMemRegion | SetBackendReqFd | SetInflightFd):
        return (effect.fd,)
    if isinstance(effect, StartVring):
        return (effect.kick_fd,)
    if isinstance(effect, SetVringCall | SetVringErr):
        return () if effect.fd is None else (effect.fd,)
    return ()


def _check_reply(data: bytes) -> None:
    if len(data) < _HEADER.size:
        raise AssertionError(f"reply of {len(data)} bytes")
    _, flags, size = _HEADER.unpack_from(data)
    if flags & 0x7 != _REPLY_FLAGS or size != len(data) - _HEADER.size:
        raise AssertionError(f"malformed reply: flags {flags:#x}, size {size} of {len(data)}")


def make() -> Callable[[bytes], None]:
    folder = tempfile.mkdtemp(prefix="bmaas-fuzz-vu-")
    path = os.path.join(folder, "vol.img")
    with open(path, "wb") as f:
        f.truncate(1 << 20)
    volume = SparseFileVolume(path)
    os.unlink(path)
    os.rmdir(folder)
    tap, _wire = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def one(data: bytes) -> None:
        if not data:
            return
        device: DeviceBackend
        if data[0] & 1:
            device = NetDevice(mac=bytes.fromhex("525400123456"), tap_fds=[tap.fileno()])
        else:
            device = BlkDevice(volume, num_queues=2, queue_size=128)
        protocol = VhostUserBackend(device)
        offset, next_fd = 1, FAKE_FD_BASE
        try:
            for _ in range(MAX_RECORDS):
                if offset + _RECORD.size > len(data):
                    break
                nfds, n = _RECORD.unpack_from(data, offset)
                offset += _RECORD.size
                chunk = data[offset : offset + n]
                offset += n
                fds = tuple(range(next_fd, next_fd + nfds % 9))
                next_fd += nfds % 9
                protocol.receive_data(chunk, fds)
                while (msg := protocol.next_message()) is not None:
                    effects = protocol.handle(msg)
                    for effect in effects:
                        stray = set(_fds_of(effect)) - set(msg.fds)
                        if stray:
                            raise AssertionError(f"{effect} names fds {stray} it was not sent")
                        if isinstance(effect, SendReply):
                            _check_reply(effect.data)
                        elif isinstance(effect, StopVring):
                            _check_reply(protocol.vring_base_reply(effect.index, 7))
        except VhostUserError:
            pass  # the session closes the connection
        finally:
            if isinstance(device, NetDevice):
                device.close()

    return one


# -- seeds: a QEMU-like session, written without the project's encoders ---------------


def _msg(request: int, payload: bytes = b"", *, need_reply: bool = False, fds: int = 0) -> bytes:
    flags = 0x1 | (0x8 if need_reply else 0)
    body = _HEADER.pack(request, flags, len(payload)) + payload
    return _RECORD.pack(fds, len(body)) + body


def _u64(value: int) -> bytes:
    return struct.pack("=Q", value)


def _region(gpa: int, size: int, uva: int, offset: int) -> bytes:
    return struct.pack("=QQQQ", gpa, size, uva, offset)


def _session(*, net: bool, need_reply: bool) -> bytes:
    features = (1 << 32) | (1 << 30) | (1 << 28) | (1 << 29)
    protocol = 1 | (1 << 3) | (1 << 15) | (0 if net else (1 << 9) | (1 << 12))
    nr = need_reply
    uva = 0x7F00_0000_0000
    parts = [
        _msg(1),  # GET_FEATURES
        _msg(15),  # GET_PROTOCOL_FEATURES
        _msg(16, _u64(protocol)),  # SET_PROTOCOL_FEATURES
        _msg(17),  # GET_QUEUE_NUM
        _msg(36),  # GET_MAX_MEM_SLOTS
        _msg(3, need_reply=nr),  # SET_OWNER
        _msg(2, _u64(features), need_reply=nr),  # SET_FEATURES
        *(() if net else (_msg(24, struct.pack("=III", 0, 60, 0) + bytes(60)),)),  # GET_CONFIG
        _msg(5, struct.pack("=II", 1, 0) + _region(0, 1 << 20, uva, 0), need_reply=nr, fds=1),
        _msg(37, _u64(0) + _region(1 << 20, 1 << 20, uva + (1 << 20), 0), need_reply=nr, fds=1),
        _msg(8, struct.pack("=II", 0, 128), need_reply=nr),  # SET_VRING_NUM
        _msg(9, struct.pack("=IIQQQQ", 0, 0, uva, uva + 0x1000, uva + 0x800, 0), need_reply=nr),
        _msg(10, struct.pack("=II", 0, 0), need_reply=nr),  # SET_VRING_BASE
        _msg(13, _u64(0), need_reply=nr, fds=1),  # SET_VRING_CALL
        _msg(14, _u64(0 | 1 << 8), need_reply=nr),  # SET_VRING_ERR, no fd
        _msg(12, _u64(0), need_reply=nr, fds=1),  # SET_VRING_KICK
        _msg(18, struct.pack("=II", 0, 1), need_reply=nr),  # SET_VRING_ENABLE
        _msg(11, struct.pack("=II", 0, 0)),  # GET_VRING_BASE
        _msg(38, _u64(0) + _region(1 << 20, 1 << 20, uva + (1 << 20), 0), need_reply=nr),
    ]
    if not net:
        parts += [
            _msg(31, struct.pack("=QQHH4x", 0, 0, 2, 128)),  # GET_INFLIGHT_FD
            _msg(32, struct.pack("=QQHH4x", 4096, 0, 2, 128), need_reply=nr, fds=1),
            _msg(25, struct.pack("=III", 32, 1, 0) + b"\x01", need_reply=nr),  # SET_CONFIG
        ]
    return bytes((1 if net else 0,)) + b"".join(parts)


def seeds() -> dict[str, bytes]:
    return {
        "blk_session": _session(net=False, need_reply=False),
        "blk_session_reply_ack": _session(net=False, need_reply=True),
        "net_session": _session(net=True, need_reply=False),
        "unknown_request_with_reply_ack": b"\0" + _msg(99, b"x", need_reply=True) + _msg(1),
        "reset_owner_then_restart": b"\0" + _msg(2, _u64(1 << 32)) + _msg(4) + _msg(1),
    }
