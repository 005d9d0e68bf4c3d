"""Serial console tails, one key per instance (``consoles/{t}/{i}``).

The host agent sends the newest bytes of its server's serial log whenever
they change; the API stores them verbatim (bounded by ``MAX_TAIL``) with a
plain put - a tail is a snapshot, last writer wins - and
``GetConsoleOutput`` reads it back.  Nothing watches these keys, so a chatty
console never wakes a controller.
"""

from __future__ import annotations

from control_plane.store.keys import KeySpace
from control_plane.store.kv import EtcdKV, op_put

MAX_TAIL = 64 * 1024


class Consoles:
    def __init__(self, kv: EtcdKV, keys: KeySpace) -> None:
        self._kv = kv
        self._keys = keys

    async def put(self, instance: str, tail: bytes) -> None:
        await self._kv.txn([], [op_put(self._keys.console(instance), tail[-MAX_TAIL:])])

    async def get(self, instance: str) -> bytes:
        kv = await self._kv.get(self._keys.console(instance))
        return b"" if kv is None else kv.value

    async def delete(self, instance: str) -> None:
        await self._kv.delete(self._keys.console(instance))
