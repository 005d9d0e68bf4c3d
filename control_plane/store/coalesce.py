"""Write coalescing for writers that do not care whose txn carries a write
(the controllers).

``WriteCoalescer.submit`` queues an ``update_many`` call: while one batched
txn is in flight the next calls accumulate and are sent as ONE
``update_many`` of all their records (every record compared on its own
etag, usage deltas summed per tenant).  If that txn fails (a record moved,
a quota, etcd trouble), each call is retried alone, so the outcome of each
is what its own ``update_many`` would have given -- only the round trips are
shared.  Calls under different leader fences never share a txn, and two
calls writing one key go to different txns (one put per key per txn).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from control_plane.store.kv import Fence, current_fence, fenced

#: records per batched transaction (etcd allows 128 ops per txn branch by
#: default; the failure branch also reads 3 counters per tenant)
BATCH_MAX = 32

UpdateMany = Callable[[list[Any], list[Any]], Awaitable[list[Any]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Call:
    """One ``submit`` waiting for a shared txn."""

    objs: list[Any]
    previous: list[Any]
    keys: frozenset[bytes]
    future: asyncio.Future[list[Any]]
    #: the caller's leader fence: only calls under the same fence share a txn
    fence: Fence | None = None


class WriteCoalescer:
    def __init__(self, update_many: UpdateMany) -> None:
        self._update_many = update_many
        self._queue: list[_Call] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(
        self, objs: Sequence[Any], previous: Sequence[Any], keys: frozenset[bytes]
    ) -> list[Any]:
        """``update_many(objs, previous)`` in the next shared txn; *keys*
        are the records' etcd keys."""
        call = _Call(
            objs=list(objs),
            previous=list(previous),
            keys=keys,
            future=asyncio.get_running_loop().create_future(),
            fence=current_fence(),
        )
        self._queue.append(call)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="store-batched-updates"
            )
        return await call.future

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        """Send the waiting calls, one txn at a time."""
        batch: list[_Call] = []
        try:
            while self._queue:
                keys: set[bytes] = set()
                batch, rest, size = [], [], 0
                for call in self._queue:
                    if call.future.done():
                        continue  # the caller went away before its write was sent
                    if (
                        keys & call.keys
                        or (batch and size + len(call.objs) > BATCH_MAX)
                        or (batch and call.fence is not batch[0].fence)
                    ):
                        rest.append(call)  # one put per key per txn: next round
                    else:
                        keys |= call.keys
                        size += len(call.objs)
                        batch.append(call)
                self._queue = rest
                if len(batch) == 1:
                    await self._settle(batch[0])
                elif batch:
                    await self._write(batch)
        except BaseException:  # cancelled (aclose): nobody may wait forever
            for call in (*batch, *self._queue):
                call.future.cancel()
            self._queue = []
            raise

    async def _settle(self, call: _Call) -> None:
        try:
            with fenced(call.fence):  # the caller's fence, not the batch task's
                result = await self._update_many(call.objs, call.previous)
        except Exception as exc:  # handed to the caller, as ``update_many`` would raise it
            if not call.future.done():
                call.future.set_exception(exc)
        else:
            if not call.future.done():
                call.future.set_result(result)

    async def _write(self, batch: Sequence[_Call]) -> None:
        try:
            with fenced(batch[0].fence):
                written = await self._update_many(
                    [o for c in batch for o in c.objs], [p for c in batch for p in c.previous]
                )
        except Exception:
            # a record moved, a quota, etcd trouble: let each write meet it alone
            await asyncio.gather(*(self._settle(call) for call in batch))
            return
        at = 0
        for call in batch:
            if not call.future.done():
                call.future.set_result(written[at : at + len(call.objs)])
            at += len(call.objs)
