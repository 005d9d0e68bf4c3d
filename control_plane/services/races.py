"""Reads, checks and writes that a controller may overtake."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from control_plane.domain.errors import NotFound
from control_plane.store import RecordChanged, Store
from control_plane.store.records import R

T = TypeVar("T")

#: tries of a read-check-write whose records a controller changed meanwhile
RACE_ATTEMPTS = 8


async def retry_races(attempt: Callable[[], Awaitable[T]], *, guarded: str = "") -> T:
    """Run *attempt* (read, check, write in one transaction) again when a
    record it read changed before its transaction, e.g. a controller moved
    the instance on: the caller asked for no particular version of it.  A
    change to *guarded*, the record the caller gave an etag for, is the
    caller's conflict and surfaces (ABORTED)."""
    for _ in range(RACE_ATTEMPTS - 1):
        try:
            return await attempt()
        except RecordChanged as exc:
            if guarded and exc.name == guarded:
                raise
    return await attempt()


async def ref(store: Store, cls: type[R], name: str, field: str) -> R:
    """The record *name* a request field refers to; ``NotFound`` naming the
    field (the API's error table turns the wording into resource details)."""
    try:
        return await store.get(cls, name)
    except NotFound:
        raise NotFound(f"{field}: {name} not found") from None
