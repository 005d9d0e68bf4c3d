"""Serial console tails, one key per instance (``consoles/{t}/{i}``).

The host agent sends the newest bytes of its server's serial log whenever
they change.  Those writes stay out of the placement's hot path:

- ``offer`` only keeps the newest tail of each instance in memory (a later
  tail replaces an unwritten one: a tail is a snapshot, last writer wins);
- one flusher task per replica writes whatever is pending every
  ``FLUSH_SECONDS``, up to ``FLUSH_BATCH`` instances per txn - so a console
  costs at most one write per instance per period, shared with every other
  instance's, and a chatty console never costs a round trip of its own;
- ``discard`` drops a pending tail (its instance left the host);
  ``delete_later`` (the instance controller, on TERMINATED) removes the
  stored one with the next flush, ``delete`` at once.

``GetConsoleOutput`` reads the stored tail (``get``): at most one period
old.  Nothing watches these keys, so a console never wakes a controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from control_plane.domain.errors import BmaasError
from control_plane.store.keys import KeySpace
from control_plane.store.kv import EtcdKV, op_delete, op_put

log = logging.getLogger(__name__)

MAX_TAIL = 64 * 1024
#: how often pending tails are written (seconds)
FLUSH_SECONDS = 1.0
#: tails per txn: 16 x MAX_TAIL stays under etcd's default 1.5 MiB request limit
FLUSH_BATCH = 16


class Consoles:
    def __init__(self, kv: EtcdKV, keys: KeySpace, *, period: float = FLUSH_SECONDS) -> None:
        self._kv = kv
        self._keys = keys
        self._period = period
        #: instance -> its newest unwritten tail (None: to be deleted)
        self._pending: dict[str, bytes | None] = {}
        self._flusher: asyncio.Task[None] | None = None

    def offer(self, instance: str, tail: bytes) -> None:
        """Store *tail* as *instance*'s console within one flush period."""
        self._pending[instance] = tail[-MAX_TAIL:]
        self._start()

    def _start(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_loop(), name="console-flusher"
            )

    def discard(self, instance: str) -> None:
        self._pending.pop(instance, None)

    def delete_later(self, instance: str) -> None:
        """``delete`` within one flush period, batched with other writes."""
        self._pending[instance] = None
        self._start()

    async def put(self, instance: str, tail: bytes) -> None:
        """Store *tail* now (one round trip)."""
        self._pending.pop(instance, None)
        await self._kv.txn([], [op_put(self._keys.console(instance), tail[-MAX_TAIL:])])

    async def get(self, instance: str) -> bytes:
        kv = await self._kv.get(self._keys.console(instance))
        return b"" if kv is None else kv.value

    async def delete(self, instance: str) -> None:
        self._pending.pop(instance, None)
        await self._kv.delete(self._keys.console(instance))

    async def flush(self) -> None:
        """Write every pending tail now."""
        while self._pending:
            batch = list(self._pending.items())[:FLUSH_BATCH]
            for instance, _ in batch:
                del self._pending[instance]
            ops = [
                op_delete(self._keys.console(i))
                if tail is None
                else op_put(self._keys.console(i), tail)
                for i, tail in batch
            ]
            await self._kv.txn([], ops)

    async def _flush_loop(self) -> None:
        while self._pending:
            await asyncio.sleep(self._period)
            try:
                await self.flush()
            except BmaasError as exc:  # the next offer of each instance brings it again
                log.warning("console tails dropped (%s)", exc)

    async def aclose(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        with contextlib.suppress(BmaasError):
            await self.flush()
