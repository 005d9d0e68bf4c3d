"""A fake QEMU monitor: a QMP server on a unix socket, for tests without QEMU.

It speaks enough of the protocol for the qemu driver's health and reset
paths: the greeting, ``qmp_capabilities``, ``query-status`` (the run state
set with ``run_state``), ``query-kvm``, ``system_reset`` and ``cont`` with
QEMU's rules (a reset of a stopped guest leaves it in ``prelaunch``;
``cont`` from ``guest-panicked``, ``internal-error`` or ``shutdown`` is
refused until a reset), and ``emit()`` sends an event to the connected
client.  Any other command answers ``CommandNotFound``.  ``commands``
records what was asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

_NEEDS_RESET = frozenset({"guest-panicked", "internal-error", "shutdown"})


class FakeQmp:
    def __init__(self, path: Path, *, run_state: str = "running", kvm: bool = False) -> None:
        self.path = path
        self.run_state = run_state
        self.kvm = kvm
        self.commands: list[str] = []
        self._server: asyncio.AbstractServer | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> FakeQmp:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        return self

    async def aclose(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.path.unlink(missing_ok=True)

    async def emit(self, event: str, **data: Any) -> None:
        """Send *event* to every connected client, as QEMU does."""
        now = time.time()
        stamp = {"seconds": int(now), "microseconds": int(now % 1 * 1e6)}
        for writer in self._writers:
            await self._send(writer, {"event": event, "data": data, "timestamp": stamp})

    async def _send(self, writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        writer.write(json.dumps(message).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        greeting = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2}}, "capabilities": []}}
        try:
            await self._send(writer, greeting)
            while line := await reader.readline():
                request = json.loads(line)
                command = str(request.get("execute", ""))
                self.commands.append(command)
                reply = self._execute(command)
                reply["id"] = request.get("id")
                await self._send(writer, reply)
        except (ConnectionError, ValueError):
            pass
        finally:
            self._writers.remove(writer)
            writer.close()

    def _execute(self, command: str) -> dict[str, Any]:
        if command == "qmp_capabilities":
            return {"return": {}}
        if command == "query-status":
            running = self.run_state == "running"
            return {"return": {"status": self.run_state, "running": running, "singlestep": False}}
        if command == "query-kvm":
            return {"return": {"enabled": self.kvm, "present": self.kvm}}
        if command == "system_reset":
            if self.run_state != "running":
                self.run_state = "prelaunch"
            return {"return": {}}
        if command == "cont":
            if self.run_state in _NEEDS_RESET:
                return _error("GenericError", "Resetting the Virtual Machine is required")
            self.run_state = "running"
            return {"return": {}}
        return _error("CommandNotFound", f"The command {command} has not been found")


def _error(error_class: str, desc: str) -> dict[str, Any]:
    return {"error": {"class": error_class, "desc": desc}}
