"""Scatter-gather helpers over lists of memoryviews (a chain's buffers).

Devices must not assume any framing (ANY_LAYOUT is implied by VERSION_1), so
a header may span descriptors and the status byte may share a buffer with
data.  These helpers cut a list of views at a byte offset by slicing the one
view that straddles it, never copying payload bytes.
"""

from __future__ import annotations

__all__ = ["gather", "split_back", "split_front"]


def split_front(views: list[memoryview], n: int) -> tuple[list[memoryview], list[memoryview]]:
    """Cut ``views`` after the first ``n`` bytes (fewer if the list is shorter)."""
    if views and views[0].nbytes == n:
        return views[:1], views[1:]
    front: list[memoryview] = []
    for i, v in enumerate(views):
        size = v.nbytes
        if n < size:
            if n:
                front.append(v[:n])
            return front, [v[n:], *views[i + 1 :]]
        front.append(v)
        n -= size
    return front, []


def split_back(views: list[memoryview], n: int) -> tuple[list[memoryview], list[memoryview]]:
    """Cut ``views`` before the last ``n`` bytes (fewer if the list is shorter)."""
    if views and views[-1].nbytes == n:
        return views[:-1], views[-1:]
    back: list[memoryview] = []
    for i in range(len(views) - 1, -1, -1):
        v = views[i]
        size = v.nbytes
        if n < size:
            if n:
                back.insert(0, v[size - n :])
            return [*views[:i], v[: size - n]], back
        back.insert(0, v)
        n -= size
    return [], back


def gather(views: list[memoryview]) -> bytes:
    """Copy small buffers (headers) into one bytes object."""
    if len(views) == 1:
        return views[0].tobytes()
    return b"".join(views)
