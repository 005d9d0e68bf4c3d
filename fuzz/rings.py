"""A split ring laid out by a fuzz input, and a driver-side builder for the seeds.

A ring target's input is a 12-byte header followed by a memory image
(``fuzz.guest.FuzzRam.load``)::

    u8  size_log2   queue size = 2 ** (size_log2 % 8): 1..128
    u8  flags       bit 0 EVENT_IDX; bits 1..7 are the target's own
    u16 last_avail  the device's last_avail_idx (as after SET_VRING_BASE)
    u16 used_idx    the device's used index
    u16 desc, avail, used   offsets of the three areas from region A's base

Offsets up to 0xFFFF reach past A, into the hole and into B, so the fuzzer
also tries rings outside memory.  ``RingBuilder`` plays a well-behaved
driver for the seeds: descriptors, indirect tables, the avail ring and its
index, all written into an image that ``encode`` prefixes with the header.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from fuzz.guest import IMAGE_SIZE, LAYOUT

__all__ = ["F_EVENT_IDX", "HEADER", "RingBuilder", "RingInput", "decode"]

HEADER: Final = struct.Struct("<BBHHHHH")
F_EVENT_IDX: Final = 1
_DESC = struct.Struct("<QIHH")
BASE: Final = LAYOUT[0].gpa
F_NEXT: Final = 1
F_WRITE: Final = 2
F_INDIRECT: Final = 4


@dataclass(frozen=True)
class RingInput:
    size: int
    flags: int
    last_avail: int
    used_idx: int
    desc_gpa: int
    avail_gpa: int
    used_gpa: int
    image: bytes

    @property
    def event_idx(self) -> bool:
        return bool(self.flags & F_EVENT_IDX)


def decode(data: bytes) -> RingInput | None:
    """The ring an input describes, or None if it is shorter than the header."""
    if len(data) < HEADER.size:
        return None
    log2, flags, last, used_idx, desc, avail, used = HEADER.unpack_from(data)
    return RingInput(
        size=1 << (log2 % 8),
        flags=flags,
        last_avail=last,
        used_idx=used_idx,
        desc_gpa=BASE + desc,
        avail_gpa=BASE + avail,
        used_gpa=BASE + used,
        image=data[HEADER.size : HEADER.size + IMAGE_SIZE],
    )


class RingBuilder:
    """A driver writing one split ring into a memory image (for seeds)."""

    def __init__(self, *, size: int = 16, flags: int = 0, desc: int = 0, avail: int = 0x800,
                 used: int = 0xA00, avail_start: int = 0) -> None:  # fmt: skip
        self.size = size
        self.flags = flags
        self.offsets = (desc, avail, used)
        self.image = bytearray(IMAGE_SIZE)
        self._next_desc = 0
        self._avail_start = self._avail_idx = avail_start & 0xFFFF

    def put(self, gpa: int, data: bytes) -> None:
        """Write ``data`` at a guest address (inside the image's regions)."""
        offset = 0
        for r in LAYOUT:
            if r.gpa <= gpa and gpa + len(data) <= r.end:
                start = offset + gpa - r.gpa
                self.image[start : start + len(data)] = data
                return
            offset += r.size
        raise ValueError(f"0x{gpa:x}+{len(data)} is not inside one region")

    def _desc(
        self, table_gpa: int, index: int, gpa: int, length: int, flags: int, nxt: int
    ) -> None:
        self.put(table_gpa + 16 * index, _DESC.pack(gpa, length, flags, nxt))

    def chain(self, bufs: list[tuple[int, int, bool]], *, indirect_at: int | None = None) -> int:
        """Add a chain of (gpa, length, writable) buffers and make it available; its head."""
        head = self._next_desc
        desc_gpa = BASE + self.offsets[0]
        if indirect_at is not None:
            for i, (gpa, length, writable) in enumerate(bufs):
                last = i == len(bufs) - 1
                flags = (F_WRITE if writable else 0) | (0 if last else F_NEXT)
                self._desc(indirect_at, i, gpa, length, flags, i + 1)
            self._desc(desc_gpa, head, indirect_at, 16 * len(bufs), F_INDIRECT, 0)
            self._next_desc += 1
        else:
            for i, (gpa, length, writable) in enumerate(bufs):
                last = i == len(bufs) - 1
                flags = (F_WRITE if writable else 0) | (0 if last else F_NEXT)
                self._desc(desc_gpa, head + i, gpa, length, flags, head + i + 1)
            self._next_desc += len(bufs)
        avail_gpa = BASE + self.offsets[1]
        self.put(avail_gpa + 4 + 2 * (self._avail_idx % self.size), head.to_bytes(2, "little"))
        self._avail_idx += 1
        self.put(avail_gpa + 2, (self._avail_idx & 0xFFFF).to_bytes(2, "little"))
        return head

    def encode(self, *, used_idx: int | None = None) -> bytes:
        """The whole fuzz input: header, then the image without its zero tail.

        The device starts at the builder's ``avail_start`` (and its used index
        there too unless ``used_idx`` says otherwise)."""
        last_avail = self._avail_start
        used_idx = last_avail if used_idx is None else used_idx
        log2 = self.size.bit_length() - 1
        header = HEADER.pack(log2, self.flags, last_avail, used_idx, *self.offsets)
        return header + bytes(self.image).rstrip(b"\0")
