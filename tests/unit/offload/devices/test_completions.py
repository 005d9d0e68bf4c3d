"""CompletionChannel: posts from other threads wake the ring and are reaped once."""

from __future__ import annotations

import select
import threading
import time

from offload.devices.completions import CompletionChannel


def readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def test_posts_from_threads_are_reaped_once_and_wake_the_fd() -> None:
    ch: CompletionChannel[int] = CompletionChannel()
    ch.submitted = 400
    threads = [
        threading.Thread(target=lambda base=b: [ch.post(base + i) for i in range(100)])
        for b in range(0, 400, 100)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert readable(ch.fd)
    got = ch.reap()
    assert sorted(got) == list(range(400))
    assert ch.in_flight == 0
    assert not readable(ch.fd)
    assert ch.reap() == []
    ch.close()


def test_only_an_armed_channel_is_woken_and_arm_never_loses_a_post() -> None:
    ch: CompletionChannel[str] = CompletionChannel()
    ch.submitted = 3
    ch.post("a")  # the worker sleeps (armed from the start): wake it
    assert readable(ch.fd)
    ch.post("b")  # the worker is awake already: no system call
    assert ch.reap() == ["a", "b"]
    assert not readable(ch.fd)
    ch.post("c")  # posted while the worker still works: it is not woken ...
    assert not readable(ch.fd)
    ch.arm()  # ... but when it arms before sleeping, it finds "c" and wakes itself
    assert readable(ch.fd)
    assert ch.reap() == ["c"]
    ch.arm()
    assert not readable(ch.fd)
    ch.close()


def test_wait_idle_waits_for_what_is_in_flight() -> None:
    ch: CompletionChannel[int] = CompletionChannel()
    ch.submitted = 3
    ch.post(1)
    timer = threading.Timer(0.05, lambda: (ch.post(2), ch.post(3)))
    timer.start()
    assert sorted(ch.wait_idle(10.0)) == [1, 2, 3]
    assert ch.in_flight == 0
    timer.join()
    ch.close()


def test_wait_idle_gives_up_after_its_timeout() -> None:
    ch: CompletionChannel[int] = CompletionChannel()
    ch.submitted = 1
    started = time.monotonic()
    assert ch.wait_idle(0.05) == []
    assert ch.in_flight == 1
    assert time.monotonic() - started < 5
    ch.close()
