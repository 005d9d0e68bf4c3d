"""Is the guest running?  The server's health from what QMP says (pure).

A QEMU process that exists is not a guest that runs: a guest that panicked
(``pvpanic``, with ``-action panic=pause``) leaves QEMU in the
``guest-panicked`` run state, a CPU that KVM cannot emulate (OVMF on some
hosts: "KVM internal error. Suberror: 1 ... emulation failure") leaves it in
``internal-error``, both with the process alive.  So the qemu driver asks
``query-status`` on every reconcile run (level-triggered: it holds after
an agent restart too) and ``from_qmp`` maps the run state to a ``Health``:

============================  ========================================================
``running``, ``suspended``    healthy (``suspended`` is a guest's own S3 sleep)
``guest-panicked``            failed: "the guest panicked" and the console's panic line
``internal-error``            failed: "the server stopped with an internal error" and
                              QEMU's own message (from its log)
``io-error``, ``watchdog``    failed, named
``shutdown``                  failed: "the server shut down" (the reason of the
                              last ``SHUTDOWN`` event when there is one)
anything else (``paused``)    failed: "the server is not running (STATE)"
============================  ========================================================

The events the session saw (``STOP``, ``SHUTDOWN``, ``GUEST_PANICKED``,
``RESET``, ``RESUME``) add detail, never override the run state: a
``GUEST_PANICKED`` followed by a ``RESET`` is history once the guest runs
again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from host_agent.power.qmp import QmpEvent

_PANIC_LINE = re.compile(r"Kernel panic - not syncing:[^\r\n]*")
_OK_STATES = frozenset({"running", "suspended"})
_NAMED = {
    "io-error": "the server stopped on an I/O error",
    "watchdog": "the guest's watchdog expired",
}


@dataclass(frozen=True, slots=True)
class Health:
    """``ok`` when the guest runs; otherwise ``reason`` says why not."""

    ok: bool = True
    reason: str = ""


HEALTHY = Health()


def from_qmp(
    status: Mapping[str, Any],
    events: Sequence[QmpEvent] = (),
    *,
    console: str = "",
    qemu_log: str = "",
) -> Health:
    """The health of a server whose ``query-status`` returned *status*.

    *events* are the session's events, oldest first; *console* the serial
    console's tail, *qemu_log* the tail of what QEMU wrote to its stderr."""
    state = str(status.get("status", ""))
    if state in _OK_STATES:
        return HEALTHY
    last = _last_watched(events)
    if state == "guest-panicked" or (last is not None and last.name == "GUEST_PANICKED"):
        return Health(False, _panicked(console))
    if state == "internal-error":
        detail = _qemu_message(qemu_log)
        reason = "the server stopped with an internal error"
        return Health(False, f"{reason}: {detail}" if detail else reason)
    if state in _NAMED:
        return Health(False, _NAMED[state])
    if state == "shutdown":
        cause = last.data.get("reason") if last is not None and last.name == "SHUTDOWN" else None
        return Health(False, f"the server shut down ({cause})" if cause else "the server shut down")
    return Health(False, f"the server is not running ({state or 'unknown state'})")


def _last_watched(events: Sequence[QmpEvent]) -> QmpEvent | None:
    """The newest ``GUEST_PANICKED`` or ``SHUTDOWN`` since the guest last ran
    again (``RESET``, ``RESUME``); the ``STOP`` that follows a panic says no more."""
    for event in reversed(events):
        if event.name in ("RESET", "RESUME"):
            return None
        if event.name in ("GUEST_PANICKED", "SHUTDOWN"):
            return event
    return None


def _qemu_message(log: str) -> str:
    """QEMU's line about the error (a register dump follows KVM's), else its last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    found = [line for line in lines if "internal error" in line.lower()]
    if not found:
        return lines[-1][:300] if lines else ""
    message = found[-1][:300]
    if any("emulation failure" in line.lower() for line in lines):
        message += " (emulation failure)"
    return message


def _panicked(console: str) -> str:
    lines = _PANIC_LINE.findall(console)
    return f"the guest panicked: {lines[-1].strip()}" if lines else "the guest panicked"
