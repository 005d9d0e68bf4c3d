"""Descriptor chains and the split ring: ``SplitQueue`` over fuzzer-built guest memory.

The input is a ring (``fuzz.rings``).  The device side pops every chain it
is offered (at most queue size + 1 times), returns each with its writable
length, then does what a device does before sleeping (notification check,
re-arming kicks).  Only ``GuestError`` may come out of the queue, a popped
chain's lengths must add up and stay below 2**32, and every access must stay
inside the regions (``fuzz.guest``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from fuzz.guest import FuzzRam
from fuzz.rings import BASE, F_EVENT_IDX, RingBuilder, decode
from offload.errors import GuestDescriptorError, GuestError, GuestRingError
from offload.virtio.queue import SplitQueue

__all__ = ["MAX_LEN", "make", "seeds"]

MAX_LEN: Final = 4096


def _check_chain(
    readable: list[memoryview], writable: list[memoryview], rlen: int, wlen: int
) -> None:
    if sum(v.nbytes for v in readable) != rlen or sum(v.nbytes for v in writable) != wlen:
        raise AssertionError("a chain's lengths do not add up")
    if rlen + wlen >= 1 << 32:
        raise AssertionError("a chain of 2**32 bytes or more was accepted")
    if any(not v.nbytes for v in (*readable, *writable)):
        raise AssertionError("a chain holds an empty buffer")


def make() -> Callable[[bytes], None]:
    ram = FuzzRam()

    def one(data: bytes) -> None:
        ring = decode(data)
        if ring is None:
            return
        ram.load(ring.image)
        queue = SplitQueue(
            ram.mem,
            size=ring.size,
            desc_gpa=ring.desc_gpa,
            avail_gpa=ring.avail_gpa,
            used_gpa=ring.used_gpa,
            event_idx=ring.event_idx,
        )
        try:
            queue.last_avail_idx = ring.last_avail
            queue.used_idx = ring.used_idx
            for _ in range(ring.size + 1):
                try:
                    chain = queue.pop()
                except GuestDescriptorError as exc:
                    if not 0 <= exc.head < ring.size:
                        raise AssertionError(f"bad chain reported head {exc.head}") from exc
                    queue.push(exc.head, 0)
                    continue
                if chain is None:
                    break
                _check_chain(chain.readable, chain.writable, chain.readable_len, chain.writable_len)
                queue.push(chain.head, chain.writable_len)
            queue.should_notify()
            queue.enable_kicks()
            queue.has_available()
        except GuestRingError:
            pass
        except GuestError as exc:
            raise AssertionError(f"queue raised {type(exc).__name__} outside a pop") from exc
        ram.check_canaries()

    return one


def seeds() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    a, b, c = BASE + 0x1000, 0x2_0000, 0x2_1000
    ring = RingBuilder(size=16)
    ring.chain([(a, 16, False), (b, 512, True), (a + 16, 1, True)])
    ring.chain([(a + 32, 64, False)])
    out["three_chains"] = ring.encode()
    ring = RingBuilder(size=16, flags=F_EVENT_IDX)
    ring.chain([(a, 16, False), (b, 4096, True), (c, 100, True), (a + 16, 1, True)])
    out["event_idx_straddling_buffers"] = ring.encode()
    ring = RingBuilder(size=64)
    ring.chain([(a, 16, False), (b, 512, False), (a + 16, 1, True)], indirect_at=a + 0x200)
    ring.chain([(a + 64, 14, False)])
    out["indirect"] = ring.encode()
    ring = RingBuilder(size=8, avail_start=0xFFFC)
    for i in range(8):
        ring.chain([(a + 64 * i, 64, i % 2 == 1)])
    out["full_ring_wrapping"] = ring.encode()
    return out
