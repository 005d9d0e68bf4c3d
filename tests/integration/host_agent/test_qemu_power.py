"""The qemu power driver with a real QEMU (no disk: OVMF waits in its shell).

A server whose QEMU is killed under its guest is OFF *and* not healthy,
with the signal as the reason (the agent reports FAILED, not STOPPED); one
that shuts down (QEMU exits 0) is OFF and healthy (STOPPED); powering on
again clears the reason.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from host_agent.config import AgentConfig
from host_agent.desired import Power
from host_agent.power.base import Machine
from host_agent.power.health import HEALTHY
from host_agent.power.qemu_driver import QemuPower

pytestmark = pytest.mark.integration


@pytest.fixture
async def driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[QemuPower]:
    monkeypatch.setenv("BMAAS_ACCEL", "tcg")
    run_dir = Path(tempfile.mkdtemp(prefix="bqp", dir="/tmp"))  # unix socket paths
    config = AgentConfig(
        host_id="h1",
        endpoints=("127.0.0.1:1",),
        credential="h1.x",
        state_dir=tmp_path,
        run_dir_=run_dir,
    )
    driver = QemuPower(tmp_path / "inst", config)
    try:
        yield driver
    finally:
        await driver.power_off()
        shutil.rmtree(run_dir, ignore_errors=True)


async def _off(driver: QemuPower) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while await driver.state() != Power.OFF:
        assert loop.time() < deadline, "the server did not stop"
        await asyncio.sleep(0.1)


async def test_a_killed_server_is_off_and_failed_a_shut_down_one_is_off(
    driver: QemuPower,
) -> None:
    await driver.power_on(Machine(name="t", memory_mib=256))
    assert await driver.state() == Power.ON
    assert await driver.health() == HEALTHY
    os.kill(int(driver.pidfile.read_text()), signal.SIGKILL)
    await _off(driver)
    health = await driver.health()
    assert not health.ok
    assert health.reason == "the server's QEMU was killed by SIGKILL"
    assert await driver.health() == health  # it stays until the next power-on

    await driver.power_on(Machine(name="t", memory_mib=256))
    assert await driver.health() == HEALTHY
    await driver._exec("quit")  # QEMU says SHUTDOWN and exits 0, as on a guest's poweroff
    await _off(driver)
    assert await driver.health() == HEALTHY
