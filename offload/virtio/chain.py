"""Bounded descriptor-chain walks for the split virtqueue (virtio 1.2 §2.7.5).

``walk_chain`` follows one chain from its head through the descriptor table
and at most one indirect table, and returns the buffers as memoryviews into
guest memory (zero-copy) split into the device-readable and device-writable
lists.  Everything it reads is guest-controlled, so every step is bounded:

* the time-to-live of a walk is the size of the table being walked (queue
  size for the main table, entry count for an indirect table); running out
  means the chain loops;
* ``next`` must index inside the current table;
* the summed length must stay below 2**32 (the spec's chain limit, and
  used.len is 32-bit);
* an indirect descriptor must not also carry NEXT, must not appear inside an
  indirect table, and its table must be a non-zero multiple of 16 bytes
  holding at most ``MAX_INDIRECT_ENTRIES`` entries; its WRITE flag is
  ignored as the spec requires; it may follow normal descriptors;
* a readable descriptor must not follow a writable one;
* every buffer goes through ``GuestMemory.view`` (one region, range-checked).
  Zero-length buffers are skipped without looking at their address.

Violations raise a ``GuestDescriptorError`` subclass carrying ``head``: the
caller has consumed the head and returns it to the driver with used len 0.
"""

from __future__ import annotations

import struct

from offload.errors import (
    DescriptorAddressOutOfRange,
    DescriptorChainLoop,
    DescriptorIndexOutOfRange,
    DescriptorLengthOverflow,
    DescriptorOrderViolation,
    GuestIndirectTableInvalid,
    GuestMemoryError,
)
from offload.memory import GuestMemory

__all__ = [
    "DESC",
    "DescriptorChain",
    "F_INDIRECT",
    "F_NEXT",
    "F_WRITE",
    "MAX_CHAIN_BYTES",
    "MAX_INDIRECT_ENTRIES",
    "walk_chain",
]

DESC = struct.Struct("<QIHH")  # addr, len, flags, next
F_NEXT = 1
F_WRITE = 2
F_INDIRECT = 4
MAX_INDIRECT_ENTRIES = 1024  # IOV_MAX; independent of the queue size
MAX_CHAIN_BYTES = 1 << 32


class DescriptorChain:
    """One popped request: its head index and its guest buffers."""

    __slots__ = ("head", "readable", "readable_len", "writable", "writable_len")

    def __init__(
        self,
        head: int,
        readable: list[memoryview],
        writable: list[memoryview],
        readable_len: int,
        writable_len: int,
    ) -> None:
        self.head = head
        self.readable = readable
        self.writable = writable
        self.readable_len = readable_len
        self.writable_len = writable_len

    def __repr__(self) -> str:
        return (
            f"DescriptorChain(head={self.head}, readable={self.readable_len}B"
            f"/{len(self.readable)}, writable={self.writable_len}B/{len(self.writable)})"
        )


def walk_chain(mem: GuestMemory, desc_table: memoryview, size: int, head: int) -> DescriptorChain:
    """Walk the chain starting at ``head`` (already checked to be < ``size``)."""
    unpack = DESC.unpack_from
    view = mem.view
    readable: list[memoryview] = []
    writable: list[memoryview] = []
    rlen = wlen = 0
    seen_write = in_indirect = False
    table = desc_table
    limit = ttl = size
    index = head
    try:
        while True:
            if index >= limit:
                raise DescriptorIndexOutOfRange(head, f"next index {index} >= table size {limit}")
            addr, length, flags, nxt = unpack(table, index << 4)
            if flags & F_INDIRECT:
                if in_indirect:
                    raise GuestIndirectTableInvalid(head, "nested indirect table")
                if flags & F_NEXT:
                    raise GuestIndirectTableInvalid(head, "indirect descriptor with NEXT")
                entries, rest = divmod(length, 16)
                if rest or not 0 < entries <= MAX_INDIRECT_ENTRIES:
                    raise GuestIndirectTableInvalid(head, f"indirect table of {length} bytes")
                try:
                    table = view(addr, length)
                except GuestMemoryError as exc:
                    raise GuestIndirectTableInvalid(head, str(exc)) from exc
                in_indirect = True
                limit = ttl = entries
                index = 0
                continue
            if flags & F_WRITE:
                seen_write = True
                if length:
                    wlen += length
                    writable.append(view(addr, length))
            else:
                if seen_write:
                    raise DescriptorOrderViolation(head, "readable descriptor after writable")
                if length:
                    rlen += length
                    readable.append(view(addr, length))
            if rlen + wlen >= MAX_CHAIN_BYTES:
                raise DescriptorLengthOverflow(head, f"{rlen + wlen} bytes")
            if not flags & F_NEXT:
                return DescriptorChain(head, readable, writable, rlen, wlen)
            ttl -= 1
            if not ttl:
                raise DescriptorChainLoop(head, f"more than {limit} descriptors")
            index = nxt
    except GuestMemoryError as exc:  # only the two buffer views above can raise it
        raise DescriptorAddressOutOfRange(head, str(exc)) from exc
