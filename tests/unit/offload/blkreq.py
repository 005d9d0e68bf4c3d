"""Driver-side virtio-blk request builder for unit tests (on top of ringbuilder)."""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass

from offload.devices.blk import BlkDevice
from offload.storage.volume import SparseFileVolume
from tests.unit.offload.ringbuilder import Buf, DriverRing

HEADER = struct.Struct("<IIQ")
SEGMENT = struct.Struct("<QII")
STATUS_UNSET = 0xEE


@dataclass
class Request:
    head: int
    status_gpa: int | None
    data_in_gpa: int | None
    data_in_len: int

    def status(self, ring: DriverRing) -> int | None:
        if self.status_gpa is None:
            return None
        return ring.ram.read(self.status_gpa, 1)[0]

    def data_in(self, ring: DriverRing) -> bytes:
        assert self.data_in_gpa is not None
        return ring.ram.read(self.data_in_gpa, self.data_in_len)


def add_request(
    ring: DriverRing,
    rtype: int,
    sector: int = 0,
    *,
    data_out: bytes = b"",
    data_in_len: int = 0,
    status: bool = True,
    indirect: bool = False,
    split_header: bool = False,
    publish: bool = True,
) -> Request:
    """Lay out header | data_out | data_in | status as separate buffers."""
    header = HEADER.pack(rtype, 0, sector)
    bufs = []
    if split_header:
        bufs += [Buf(ring.alloc(7, header[:7]), 7), Buf(ring.alloc(9, header[7:]), 9)]
    else:
        bufs.append(Buf(ring.alloc(16, header), 16))
    if data_out:
        bufs.append(Buf(ring.alloc(len(data_out), data_out), len(data_out)))
    data_in_gpa = None
    if data_in_len:
        data_in_gpa = ring.alloc(data_in_len)
        bufs.append(Buf(data_in_gpa, data_in_len, True))
    status_gpa = None
    if status:
        status_gpa = ring.alloc(1, bytes([STATUS_UNSET]))
        bufs.append(Buf(status_gpa, 1, True))
    head = ring.add_chain(bufs, indirect=indirect)
    if publish:
        ring.publish(head)
    return Request(head, status_gpa, data_in_gpa, data_in_len)


def segments(*segs: tuple[int, int, int]) -> bytes:
    return b"".join(SEGMENT.pack(*s) for s in segs)


def make_volume(
    size: int, *, read_only: bool = False, directory: str | None = None
) -> tuple[SparseFileVolume, str]:
    fd, path = tempfile.mkstemp(prefix="blkvol-", dir=directory)
    os.ftruncate(fd, size)
    os.close(fd)
    return SparseFileVolume(path, read_only=read_only), path


def make_device(volume: SparseFileVolume, **kwargs: object) -> BlkDevice:
    dev = BlkDevice(volume, serial="vol-1234", **kwargs)  # type: ignore[arg-type]
    dev.ack_features(dev.features())
    return dev
