"""``Txn``: parts by intent, failure reads by handle (no etcd: a recording kv)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from control_plane.store.kv import KV, EtcdKV, TxnResult
from control_plane.store.txn import Txn


class _RecordingKV:
    """Plays ``EtcdKV.txn``: records the request, fails, and answers each
    failure read with the key it was asked for (absent for b"gone")."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[Any], list[Any], list[Any]]] = []

    async def txn(
        self, compare: Sequence[Any], success: Sequence[Any], failure: Sequence[Any] = ()
    ) -> TxnResult:
        self.calls.append((list(compare), list(success), list(failure)))
        ranges = []
        for op in failure:
            key = op.request_range.key
            ranges.append([] if key == b"gone" else [KV(key, b"v:" + key, 7, 1, 1, 0)])
        return TxnResult(False, 9, ranges)


async def test_failure_reads_are_answered_by_handle_not_position() -> None:
    kv = _RecordingKV()
    txn = Txn()
    txn.require_absent(b"k")
    txn.put(b"k", b"v")
    first = txn.read_on_failure(b"k")
    other = Txn()
    other.require_mod(b"u", 3)
    other.put(b"u", b"1")
    other.read_on_failure(b"ignored")  # a merged builder's reads are not taken
    txn.merge(other)
    gone = txn.read_on_failure(b"gone")
    last = txn.read_on_failure(b"x")
    out = await txn.commit(cast(EtcdKV, kv))
    assert not out.succeeded and out.revision == 9
    got = out.get(first)
    assert got is not None and got.value == b"v:k"
    assert out.get(gone) is None
    x = out.get(last)
    assert x is not None and x.key == b"x"
    ((compare, success, failure),) = kv.calls
    assert [c.key for c in compare] == [b"k", b"u"]
    assert [op.request_put.key for op in success] == [b"k", b"u"]
    assert [op.request_range.key for op in failure] == [b"k", b"gone", b"x"]
