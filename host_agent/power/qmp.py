"""A small asyncio client for QEMU's QMP (the JSON machine protocol) on a unix socket.

How it works: ``QmpClient.connect(path)`` opens the socket (retrying while
QEMU has not created it yet), reads the greeting and sends
``qmp_capabilities``, which leaves negotiation mode.  From then on one reader
task owns the socket's read side and sorts each line QEMU sends:

* a reply carries the ``id`` its command was sent with; the reader resolves
  that command's future with ``return``, or fails it with ``QmpCommandError``
  carrying QEMU's ``error.class`` and ``error.desc``;
* an event (``{"event": ..., "data": ..., "timestamp": ...}``) is appended to
  ``events`` (what was seen) and to a pending list that ``wait_event``
  consumes.  An event that arrived before anyone waited for it is not lost:
  ``wait_event`` looks at the pending list first, then waits for more.  Both
  lists keep the newest ``_EVENTS_KEPT`` events, so a session the agent holds
  for days does not grow without bound.  ``connect(on_event=...)`` is also
  called with every event as it arrives (from the reader task: it must not
  block).

Commands may be sent concurrently (each has its own id).  When the socket
closes (QEMU quit, or ``aclose()``), every waiting command and
``wait_event`` fails with ``QmpConnectionError``.

Errors::

    QmpError
    ├── QmpConnectionError   cannot connect, bad greeting, or the socket closed
    └── QmpCommandError      QEMU answered a command with an error
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

_LINE_LIMIT = 16 << 20  # query-qmp-schema's reply is a few hundred KiB on one line
_EVENTS_KEPT = 1024


class QmpError(Exception):
    """Base of every QMP failure."""


class QmpConnectionError(QmpError):
    """The QMP socket could not be used (connect, greeting, or closed)."""


class QmpCommandError(QmpError):
    """QEMU answered *command* with an error of class *error_class*."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"{command}: {error_class}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc


@dataclass(frozen=True)
class QmpEvent:
    """One asynchronous event (``DEVICE_DELETED``, ``SHUTDOWN``, ...)."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)
    timestamp: float = 0.0

    def matches(self, name: str, data: Mapping[str, Any] | None) -> bool:
        """Same *name*, and every key of *data* has the same value here."""
        if self.name != name:
            return False
        return all(self.data.get(k) == v for k, v in (data or {}).items())


class QmpClient:
    """One QMP session; ``async with await QmpClient.connect(path)`` or ``aclose()``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        on_event: Callable[[QmpEvent], None] | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_event = on_event
        self._next_id = 0
        self._replies: dict[str, asyncio.Future[Any]] = {}
        self._pending_events: deque[QmpEvent] = deque(maxlen=_EVENTS_KEPT)
        self._events: deque[QmpEvent] = deque(maxlen=_EVENTS_KEPT)
        self._wakeups: set[asyncio.Future[None]] = set()
        self._closed: QmpConnectionError | None = None
        self._task: asyncio.Task[None] | None = None
        self.greeting: Mapping[str, Any] = {}

    @classmethod
    async def connect(
        cls,
        path: Path,
        *,
        timeout: float = 10.0,
        on_event: Callable[[QmpEvent], None] | None = None,
    ) -> QmpClient:
        """Connect to QEMU's ``-qmp unix:PATH,server=on``, retrying for *timeout* s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(path), limit=_LINE_LIMIT)
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if loop.time() > deadline:
                    raise QmpConnectionError(f"no QMP socket at {path} after {timeout}s") from exc
                await asyncio.sleep(0.05)
        client = cls(reader, writer, on_event=on_event)
        try:
            async with asyncio.timeout(max(deadline - loop.time(), 1.0)):
                await client._handshake()
        except TimeoutError as exc:
            await client.aclose()
            # QEMU greets one client at a time on a -qmp socket.
            raise QmpConnectionError(
                f"no QMP greeting on {path} within {timeout}s (is another client connected?)"
            ) from exc
        except BaseException:
            await client.aclose()
            raise
        return client

    async def _handshake(self) -> None:
        line = await self._reader.readline()
        try:
            greeting = json.loads(line)
        except ValueError as exc:
            raise QmpConnectionError(f"not a QMP greeting: {line[:200]!r}") from exc
        if not isinstance(greeting, dict) or "QMP" not in greeting:
            raise QmpConnectionError(f"not a QMP greeting: {line[:200]!r}")
        self.greeting = greeting["QMP"]
        self._task = asyncio.create_task(self._read_loop(), name="qmp-reader")
        await self.execute("qmp_capabilities")

    @property
    def events(self) -> tuple[QmpEvent, ...]:
        """The events received so far (the newest 1024), oldest first.

        ``wait_event`` does not remove events from here.
        """
        return tuple(self._events)

    async def execute(self, command: str, /, **arguments: Any) -> Any:
        """Run *command*; its ``return`` value, or ``QmpCommandError``.

        QMP argument names often contain dashes: ``**{"num-queues": 2}``.
        """
        if self._closed is not None:
            raise self._closed
        self._next_id += 1
        ident = f"bmaas-{self._next_id}"
        message: dict[str, Any] = {"execute": command, "id": ident}
        if arguments:
            message["arguments"] = arguments
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[ident] = reply
        try:
            self._writer.write(json.dumps(message).encode() + b"\n")
            await self._writer.drain()
            response = await reply
        except OSError as exc:
            raise QmpConnectionError(f"{command}: QMP socket failed: {exc}") from exc
        finally:
            self._replies.pop(ident, None)
        if "error" in response:
            error = response["error"]
            raise QmpCommandError(command, str(error.get("class", "?")), str(error.get("desc", "")))
        return response.get("return")

    async def wait_event(
        self, name: str, *, data: Mapping[str, Any] | None = None, timeout: float
    ) -> QmpEvent:
        """The oldest not yet waited-for *name* event whose data includes *data*."""
        async with asyncio.timeout(timeout):
            while True:
                for i, event in enumerate(self._pending_events):
                    if event.matches(name, data):
                        del self._pending_events[i]
                        return event
                if self._closed is not None:
                    raise self._closed
                wakeup: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._wakeups.add(wakeup)
                try:
                    await wakeup
                finally:
                    self._wakeups.discard(wakeup)

    async def _read_loop(self) -> None:
        reason = "QEMU closed the QMP socket"
        try:
            while line := await self._reader.readline():
                self._dispatch(json.loads(line))
        except asyncio.CancelledError:
            reason = "the QMP client was closed"
            raise
        except (OSError, ValueError) as exc:
            reason = f"QMP socket failed: {exc!r}"
        finally:
            self._fail_all(QmpConnectionError(reason))

    def _fail_all(self, error: QmpConnectionError) -> None:
        if self._closed is None:
            self._closed = error
        for reply in self._replies.values():
            if not reply.done():
                reply.set_exception(self._closed)
        self._wake()

    def _wake(self) -> None:
        for wakeup in self._wakeups:
            if not wakeup.done():
                wakeup.set_result(None)

    def _dispatch(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        if "event" in message:
            stamp = message.get("timestamp", {})
            event = QmpEvent(
                name=str(message["event"]),
                data=message.get("data", {}),
                timestamp=stamp.get("seconds", 0) + stamp.get("microseconds", 0) / 1e6,
            )
            self._events.append(event)
            self._pending_events.append(event)
            self._wake()
            if self._on_event is not None:
                self._on_event(event)
            return
        reply = self._replies.get(str(message.get("id")))
        if reply is not None and not reply.done():
            reply.set_result(message)

    async def aclose(self) -> None:
        """Close the socket and stop the reader (QEMU keeps running)."""
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_all(QmpConnectionError("the QMP client was closed"))

    async def __aenter__(self) -> QmpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
