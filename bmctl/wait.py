"""``--wait``: poll a resource until it reaches its target state.

A ``Goal`` names the resource, how to read it (``GetX`` on the API; ``None``
when it is gone), when it is done, when it has failed, and how to show its
state.  ``wait_for`` polls every ``interval`` seconds until the goal is met
(returns the last message read), the resource fails (``CliError`` with exit
status FAILED naming the reason), or ``timeout`` seconds pass (exit status
TIMEOUT).  Progress goes to stderr: a live ``rich`` status line (state and
elapsed time) on a terminal, otherwise one plain line per state change.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from google.protobuf.message import Message

from bmctl import exitcodes
from bmctl.client import CliError


@dataclass
class Goal:
    name: str  # the resource's name
    target: str  # what "done" means, for the user: "RUNNING", "gone", ...
    get: Callable[[float], Message | None]  # read it (a per-call deadline); None = gone
    done: Callable[[Message | None], bool]
    state: Callable[[Message | None], str]
    failed: Callable[[Message], str | None] = lambda _m: None  # a reason when it failed


def wait_for(
    goal: Goal,
    first: Message | None,
    *,
    timeout: float,
    interval: float = 0.5,
    stream: TextIO | None = None,
    call_timeout: float = 30.0,
) -> Message | None:
    stream = sys.stderr if stream is None else stream
    start = time.monotonic()
    deadline = start + timeout
    live = _Live(stream, goal) if stream.isatty() else _Plain(stream, goal)
    msg = first
    try:
        while True:
            elapsed = time.monotonic() - start
            live.show(goal.state(msg), elapsed)
            if msg is not None:
                reason = goal.failed(msg)
                if reason is not None:
                    raise CliError(
                        f"{goal.name} is {goal.state(msg)}: {reason or 'no reason given'}",
                        exitcodes.FAILED,
                    )
            if goal.done(msg):
                live.finish(f"{goal.name}: {goal.state(msg)} after {elapsed:.1f}s")
                return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise CliError(
                    f"timed out after {timeout:g}s waiting for {goal.name} to be {goal.target} "
                    f"(it is {goal.state(msg)})",
                    exitcodes.TIMEOUT,
                )
            time.sleep(min(interval, left))
            msg = goal.get(max(0.1, min(call_timeout, deadline - time.monotonic())))
    finally:
        live.close()


class _Plain:
    """One line per state change (stderr is not a terminal)."""

    def __init__(self, stream: TextIO, goal: Goal) -> None:
        self.stream = stream
        self.goal = goal
        self.last: str | None = None

    def show(self, state: str, elapsed: float) -> None:
        if state != self.last:
            self.last = state
            print(f"bmctl: {self.goal.name}: {state} ({elapsed:.1f}s)", file=self.stream)
            self.stream.flush()

    def finish(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class _Live:
    """A rich status line: spinner, current state, elapsed seconds."""

    def __init__(self, stream: TextIO, goal: Goal) -> None:
        from rich.console import Console

        self.console = Console(file=stream)
        self.goal = goal
        self.status = self.console.status(self._text("...", 0.0))
        self.status.start()

    def _text(self, state: str, elapsed: float) -> str:
        return (
            f"waiting for [bold]{self.goal.name}[/] to be {self.goal.target}: "
            f"[cyan]{state}[/] [dim]{elapsed:.0f}s[/]"
        )

    def show(self, state: str, elapsed: float) -> None:
        self.status.update(self._text(state, elapsed))

    def finish(self, text: str) -> None:
        self.status.stop()
        self.console.print(f"[green]✓[/] {text}", highlight=False)

    def close(self) -> None:
        self.status.stop()
