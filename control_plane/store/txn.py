"""``Txn``: one etcd transaction, built by intent instead of by position.

A write states what must hold (``require_*``), what to write when it does
(``put``/``delete``) and what to read back when it does not
(``read_on_failure``, which returns a handle).  ``commit`` sends it and
returns an ``Outcome`` that answers by handle, so no caller counts list
positions in the failure branch.  Builders compose: ``merge`` appends
another builder's parts (a quota charge, a record updated in the same txn).
The leader fence (``kv.fenced``) is added by ``EtcdKV.txn`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from control_plane.store.kv import (
    KV,
    EtcdKV,
    TxnResult,
    cmp_absent,
    cmp_mod,
    cmp_present,
    cmp_value,
    op_delete,
    op_get,
    op_put,
)


@dataclass(frozen=True, slots=True)
class Read:
    """A key the failure branch reads back (see ``Txn.read_on_failure``)."""

    key: bytes
    index: int


@dataclass(slots=True)
class Txn:
    compare: list[Any] = field(default_factory=list)
    success: list[Any] = field(default_factory=list)
    failure: list[Any] = field(default_factory=list)

    def require_absent(self, key: bytes) -> None:
        self.compare.append(cmp_absent(key))

    def require_present(self, key: bytes) -> None:
        self.compare.append(cmp_present(key))

    def require_mod(self, key: bytes, revision: int) -> None:
        """*key* was last written at *revision* (0: it is absent)."""
        self.compare.append(cmp_mod(key, revision))

    def require_value(self, key: bytes, value: bytes) -> None:
        self.compare.append(cmp_value(key, value))

    def put(self, key: bytes, value: bytes) -> None:
        self.success.append(op_put(key, value))

    def delete(self, key: bytes) -> None:
        self.success.append(op_delete(key))

    def read_on_failure(self, key: bytes) -> Read:
        self.failure.append(op_get(key))
        return Read(key, len(self.failure) - 1)

    def merge(self, other: Txn) -> None:
        """Append *other*'s compares and writes (its failure reads are not taken)."""
        self.compare += other.compare
        self.success += other.success

    async def commit(self, kv: EtcdKV) -> Outcome:
        return Outcome(await kv.txn(self.compare, self.success, self.failure))


@dataclass(frozen=True, slots=True)
class Outcome:
    result: TxnResult

    @property
    def succeeded(self) -> bool:
        return self.result.succeeded

    @property
    def revision(self) -> int:
        return self.result.revision

    def get(self, read: Read) -> KV | None:
        """What the failure branch read for *read* (None: the key is absent)."""
        got = self.result.ranges[read.index]
        return got[0] if got else None
