"""Etags: a record's etag is its key's ``mod_revision`` as a decimal string;
the revision of a successful txn becomes the etag of everything it wrote."""

from __future__ import annotations

import dataclasses

from control_plane.domain.errors import InvalidArgument
from control_plane.store import codec
from control_plane.store.kv import KV
from control_plane.store.records import R


def etag_of(kv: KV) -> str:
    return str(kv.mod_revision)


def revision_of(etag: str, name: str) -> int:
    """The revision an etag stands for; ``InvalidArgument`` if it is not one."""
    try:
        rev = int(etag)
    except ValueError:
        raise InvalidArgument(f"etag of {name}: {etag!r} is not a store etag") from None
    if rev <= 0:
        raise InvalidArgument(f"etag of {name}: {etag!r} is not a store etag")
    return rev


def with_etag(obj: R, etag: str) -> R:
    return dataclasses.replace(obj, etag=etag)  # type: ignore[type-var]


def decode(cls: type[R], kv: KV) -> R:
    """The record stored in *kv*, its etag set."""
    return codec.decode(cls, kv.value, etag=etag_of(kv))
