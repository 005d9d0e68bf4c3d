"""The qemu power driver's pieces that need no QEMU: CPU placement off the
card's CPUs, and the command line a server (unlike a test guest) runs with."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from host_agent.config import AgentConfig
from host_agent.power.qemu_driver import QemuPower, _server_argv


def _config(tmp_path: Path, card_cpus: int) -> AgentConfig:
    return AgentConfig(
        host_id="h1",
        endpoints=("127.0.0.1:1",),
        credential="h1.x",
        state_dir=tmp_path,
        card_cpus=card_cpus,
    )


@pytest.mark.parametrize("card_cpus", [0, 1])
def test_server_threads_stay_off_the_card_cpus(tmp_path: Path, card_cpus: int) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    assert len(cpus) >= 2, "the machine needs two CPUs for this test"
    driver = QemuPower(tmp_path / "inst", _config(tmp_path, card_cpus))
    proc = subprocess.Popen(["sleep", "30"])
    try:
        driver._pin(proc.pid)
        got = os.sched_getaffinity(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert got == (set(cpus[card_cpus:]) if card_cpus else set(cpus))


def test_a_server_survives_its_own_reboot_and_keeps_its_console(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    argv = ["qemu", "-no-reboot", "-chardev", f"file,id=serial0,path={console}", "-m", "512M"]
    out = _server_argv(argv, console)
    assert "-no-reboot" not in out
    assert f"file,id=serial0,path={console},append=on" in out
    assert out[-2:] == ["-m", "512M"]
