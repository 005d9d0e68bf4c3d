"""A fake of python3-rbd's ``rbd.Image`` for unit tests: asynchronous calls whose
completions the test releases, in the order it chooses, from another thread
(as librbd's finisher thread would)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class FakeCompletion:
    def __init__(self, ret: int) -> None:
        self._ret = ret

    def get_return_value(self) -> int:
        return self._ret


@dataclass
class PendingOp:
    kind: str
    args: tuple[Any, ...]
    callback: Callable[..., Any]
    result: list[Any] = field(default_factory=list)


class FakeImage:
    """Bytes in memory; every aio call waits in ``pending`` until ``complete``."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.pending: list[PendingOp] = []
        self.fail_with = 0  # a negative errno every completion then returns
        self.refuse: Exception | None = None  # raised at submission
        self.flushes = 0
        self._lock = threading.Lock()

    def size(self) -> int:
        return len(self.data)

    def resize(self, size: int) -> None:
        self.data.extend(bytes(size - len(self.data)))

    def _add(self, kind: str, callback: Callable[..., Any], *args: Any) -> None:
        if self.refuse is not None:
            raise self.refuse
        with self._lock:
            self.pending.append(PendingOp(kind, args, callback))

    def aio_read(self, offset: int, length: int, oncomplete: Callable[..., Any]) -> None:
        self._add("read", oncomplete, offset, length)

    def aio_write(self, data: bytes, offset: int, oncomplete: Callable[..., Any]) -> None:
        assert isinstance(data, bytes)  # python-rbd takes bytes only
        self._add("write", oncomplete, data, offset)

    def aio_flush(self, oncomplete: Callable[..., Any]) -> None:
        self._add("flush", oncomplete)

    def aio_discard(self, offset: int, length: int, oncomplete: Callable[..., Any]) -> None:
        self._add("discard", oncomplete, offset, length)

    def aio_write_zeroes(self, offset: int, length: int, oncomplete: Callable[..., Any]) -> None:
        self._add("write_zeroes", oncomplete, offset, length)

    def _run(self, op: PendingOp) -> None:
        ret = self.fail_with
        if op.kind == "read":
            offset, length = op.args
            data = bytes(self.data[offset : offset + length]) if ret == 0 else None
            op.callback(FakeCompletion(ret if ret else length), data)
            return
        if ret == 0:
            if op.kind == "write":
                data, offset = op.args
                self.data[offset : offset + len(data)] = data
            elif op.kind in ("discard", "write_zeroes"):
                offset, length = op.args
                self.data[offset : offset + length] = bytes(length)
            else:
                self.flushes += 1
        op.callback(FakeCompletion(ret))

    def complete(self, order: list[int] | None = None) -> None:
        """Run the pending ops (in ``order``, indices into ``pending``) on another thread."""
        with self._lock:
            ops = self.pending
            self.pending = []
        chosen = ops if order is None else [ops[i] for i in order]
        rest = [op for op in ops if op not in chosen]
        with self._lock:
            self.pending = rest + self.pending
        thread = threading.Thread(target=lambda: [self._run(op) for op in chosen])
        thread.start()
        thread.join()
