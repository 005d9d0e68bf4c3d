"""``offload-blk`` QoS: limits from the flags and from the limits file, changed
on a running back-end with SIGHUP (what the host agent does on UpdateVolume),
measured through the driver-side front-end (``offload.testing``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from offload.testing import VhostUserBlkFrontend
from tests.integration.test_offload_blk_cli import Daemon, one_line_error, run_blk, start

pytestmark = pytest.mark.integration

MiB = 1 << 20
LIMIT = 40  # IOPS: far below what the back-end does unthrottled, even on a loaded machine


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    with path.open("wb") as f:
        f.truncate(8 * MiB)
    return path


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.communicate()


def iops(fe: VhostUserBlkFrontend, n: int) -> float:
    """Rate of *n* sequential 4 KiB reads (QD1)."""
    q = fe.queues[0]
    started = time.monotonic()
    for i in range(n):
        assert q.read(8 * (i % 256), 4096).status == 0
    return n / (time.monotonic() - started)


def wait_stats(path: Path, key: str, value: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if json.loads(path.read_text()).get(key) == value:
                return
        except (OSError, ValueError):
            pass
        assert time.monotonic() < deadline, f"{key} never became {value}"
        time.sleep(0.05)


def set_limits(d: Daemon, limits: Path, stats: Path, **values: int) -> None:
    limits.write_text(json.dumps(values))
    d.proc.send_signal(1)  # SIGHUP
    wait_stats(stats, "max_iops", values.get("max_iops", 0))


def test_limits_change_on_a_running_volume(
    tmp_path: Path, image: Path, daemons: list[Daemon]
) -> None:
    sock, limits, stats = tmp_path / "s.sock", tmp_path / "s.limits", tmp_path / "s.stats"
    d = start(daemons, sock, image, "--limits", str(limits), "--stats", str(stats))
    with VhostUserBlkFrontend(sock) as fe:
        free = iops(fe, 200)
        assert free > 3 * LIMIT
        set_limits(d, limits, stats, max_iops=LIMIT)
        iops(fe, LIMIT + 5)  # spend the burst (one second's worth)
        throttled = iops(fe, 2 * LIMIT)
        assert 0.5 * LIMIT < throttled <= 1.15 * LIMIT, throttled
        assert json.loads(stats.read_text())["throttled_total"] > 0
        set_limits(d, limits, stats, max_iops=0)  # lifted
        assert iops(fe, 200) > 3 * LIMIT
    code, out = d.stop()
    assert code == 0 and f"QoS limits now {LIMIT} IOPS" in out


def test_flags_set_the_first_limits_and_a_bad_file_keeps_them(
    tmp_path: Path, image: Path, daemons: list[Daemon]
) -> None:
    sock, limits, stats = tmp_path / "s.sock", tmp_path / "s.limits", tmp_path / "s.stats"
    d = start(
        daemons, sock, image, "--max-iops", str(LIMIT), "--limits", str(limits),
        "--stats", str(stats),
    )  # fmt: skip
    wait_stats(stats, "max_iops", LIMIT)
    with VhostUserBlkFrontend(sock) as fe:
        iops(fe, LIMIT + 5)
        assert iops(fe, LIMIT) <= 1.15 * LIMIT
        limits.write_text('{"max_iops": "many"}')
        d.proc.send_signal(1)
        wait_stats(stats, "limits_errors", 1)
        assert json.loads(stats.read_text())["max_iops"] == LIMIT
        assert iops(fe, LIMIT) <= 1.15 * LIMIT
    code, out = d.stop()
    assert code == 0 and "limits not changed" in out


@pytest.mark.parametrize("flag", ["--max-iops", "--max-mbps", "--poll-us"])
def test_bad_limits_are_one_line_errors(tmp_path: Path, image: Path, flag: str) -> None:
    result = run_blk("--socket", str(tmp_path / "s"), "--image", str(image), flag, "-1")
    assert result.returncode == 2
    assert flag in one_line_error(result)
