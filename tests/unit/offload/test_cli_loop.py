"""``offload.cli._serve``: the one main loop both CLIs run (signals, tick, close).

Signals go to this thread (``pthread_kill``), not the process: in a test run
with other threads alive, a process-directed SIGHUP could land on a thread
that does not block it and end the whole run."""

from __future__ import annotations

import signal
import threading

import pytest

from offload.cli import _serve
from offload.errors import OffloadError


class Service:
    def __init__(self) -> None:
        self.events: list[str] = []


def close(s: Service) -> None:
    s.events.append("close")


def test_tick_hangup_and_shutdown_in_order() -> None:
    svc = Service()

    def tick(s: Service) -> None:
        s.events.append("tick")
        if s.events.count("tick") == 1:
            signal.pthread_kill(threading.get_ident(), signal.SIGHUP)  # pending till it waits

    def hangup(s: Service) -> None:
        s.events.append("hup")
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert _serve("t", lambda: svc, tick=tick, hangup=hangup, close=close) == 0
    assert svc.events == ["tick", "hup", "tick", "close"]
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before  # mask restored


def test_without_a_tick_it_sleeps_in_sigwait() -> None:
    svc = Service()

    def start() -> Service:
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        return svc

    def hangup(s: Service) -> None:
        raise AssertionError("no SIGHUP was sent")

    assert _serve("t", start, tick=None, hangup=hangup, close=close) == 0
    assert svc.events == ["close"]


def test_a_start_failure_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    def start() -> Service:
        raise OffloadError("no such tap")

    def never(s: Service) -> None:
        raise AssertionError("not started")

    assert _serve("offload-x", start, tick=never, hangup=never, close=never) == 1
    assert capsys.readouterr().err == "offload-x: error: no such tap\n"
