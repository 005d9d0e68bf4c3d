"""virtio-blk requests: ``BlkDevice.process_queue`` on a fuzzer-built ring.

The input is a ring (``fuzz.rings``); flag bit 1 serves a read-only volume,
bit 2 makes the driver accept every feature the device offers (FLUSH,
DISCARD, WRITE_ZEROES ...) instead of only VERSION_1.  The volume is a
64 KiB sparse file, zeroed before each input; reads and writes really move
bytes between it and guest memory with ``preadv``/``pwritev``.
``process_queue`` must never raise (a malformed request completes with an
error status, a broken ring marks the device NEEDS_RESET), and nothing may
touch memory outside the regions (``fuzz.guest``).
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Callable
from typing import Final

from fuzz.guest import FuzzRam
from fuzz.rings import BASE, F_EVENT_IDX, RingBuilder, decode
from offload.devices.blk import BlkDevice
from offload.storage.volume import SparseFileVolume
from offload.virtio import features as vf
from offload.virtio.queue import SplitQueue

__all__ = ["MAX_LEN", "make", "seeds"]

MAX_LEN: Final = 12288
F_READ_ONLY: Final = 2
F_ALL_FEATURES: Final = 4
VOLUME_BYTES: Final = 64 * 1024
_REQ = struct.Struct("<IIQ")
_SEGMENT = struct.Struct("<QII")


def _volume(folder: str, name: str, *, read_only: bool) -> SparseFileVolume:
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.truncate(VOLUME_BYTES)
    return SparseFileVolume(path, read_only=read_only)


def make() -> Callable[[bytes], None]:
    ram = FuzzRam()
    folder = tempfile.mkdtemp(prefix="bmaas-fuzz-blk-")
    volumes = {
        False: _volume(folder, "rw.img", read_only=False),
        True: _volume(folder, "ro.img", read_only=True),
    }
    for v in volumes.values():
        os.unlink(v.path)  # the open fds keep the files while the process runs
    os.rmdir(folder)
    minimal = vf.bit(vf.VERSION_1) | vf.bit(vf.RING_INDIRECT_DESC) | vf.bit(vf.RING_EVENT_IDX)

    def one(data: bytes) -> None:
        ring = decode(data)
        if ring is None:
            return
        ram.load(ring.image)
        rw = volumes[False].fd  # zeroed for every input, so an input always reads the same
        os.ftruncate(rw, 0)
        os.ftruncate(rw, VOLUME_BYTES)
        device = BlkDevice(volumes[bool(ring.flags & F_READ_ONLY)], queue_size=128, serial="fuzz")
        offered = device.features()
        device.ack_features(offered if ring.flags & F_ALL_FEATURES else offered & minimal)
        queue = SplitQueue(
            ram.mem,
            size=ring.size,
            desc_gpa=ring.desc_gpa,
            avail_gpa=ring.avail_gpa,
            used_gpa=ring.used_gpa,
            event_idx=ring.event_idx,
        )
        queue.last_avail_idx = ring.last_avail
        queue.used_idx = ring.used_idx
        device.process_queue(0, queue)
        ram.check_canaries()

    return one


def _request(rtype: int, sector: int = 0) -> bytes:
    return _REQ.pack(rtype, 0, sector)


def seeds() -> dict[str, bytes]:
    a, b, c = BASE + 0x1000, 0x2_0000, 0x2_1000
    out: dict[str, bytes] = {}

    def one_request(name: str, bufs: list[tuple[int, int, bool]], flags: int = F_ALL_FEATURES,
                    puts: tuple[tuple[int, bytes], ...] = (), **kw: int) -> None:  # fmt: skip
        ring = RingBuilder(size=16, flags=flags, **kw)
        for gpa, payload in puts:
            ring.put(gpa, payload)
        ring.chain(bufs)
        out[name] = ring.encode()

    one_request(
        "read", [(a, 16, False), (b, 4096, True), (a + 16, 1, True)], puts=((a, _request(0, 8)),)
    )
    one_request(
        "write_event_idx",
        [(a, 16, False), (b, 512, False), (a + 16, 1, True)],
        flags=F_ALL_FEATURES | F_EVENT_IDX,
        puts=((a, _request(1, 16)), (b, b"x" * 512)),
    )
    one_request("write_read_only", [(a, 16, False), (b, 512, False), (a + 16, 1, True)],
                flags=F_ALL_FEATURES | F_READ_ONLY, puts=((a, _request(1, 0)),))  # fmt: skip
    one_request("flush", [(a, 16, False), (a + 16, 1, True)], puts=((a, _request(4)),))
    one_request(
        "get_id", [(a, 16, False), (b, 20, True), (a + 16, 1, True)], puts=((a, _request(8)),)
    )
    one_request(
        "discard",
        [(a, 16, False), (a + 32, 16, False), (a + 16, 1, True)],
        puts=((a, _request(11)), (a + 32, _SEGMENT.pack(8, 8, 0))),
    )
    one_request(
        "write_zeroes_unmap",
        [(a, 32, False), (a + 64, 1, True)],
        puts=((a, _request(13) + _SEGMENT.pack(0, 16, 1)),),
    )
    one_request(  # header split over two buffers, status sharing the data buffer
        "split_header_shared_status",
        [(a, 10, False), (a + 10, 6, False), (b + 3584, 512, True), (c, 1, True)],
        puts=((a, _request(0, 1)),),
    )
    one_request("unsupported_type", [(a, 16, False), (a + 16, 1, True)], puts=((a, _request(99)),))
    one_request("read_past_end", [(a, 16, False), (b, 512, True), (a + 16, 1, True)],
                puts=((a, _request(0, VOLUME_BYTES // 512)),))  # fmt: skip
    ring = RingBuilder(size=64, flags=F_ALL_FEATURES)
    ring.put(a, _request(0, 2))
    ring.put(a + 32, _request(1, 4))
    ring.chain([(a, 16, False), (b, 1024, True), (a + 16, 1, True)], indirect_at=a + 0x400)
    ring.chain([(a + 32, 16, False), (c, 2048, False), (a + 48, 1, True)])
    out["indirect_then_direct"] = ring.encode()
    return out
