"""Guest health: the QMP run state and events -> ``Health`` mapping, and the
qemu driver reading it from a fake QMP (``host_agent.power.fake_qmp``)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from host_agent.config import AgentConfig
from host_agent.power.fake_qmp import FakeQmp
from host_agent.power.health import HEALTHY, Health, from_qmp
from host_agent.power.qemu_driver import QemuPower
from host_agent.power.qmp import QmpEvent

PANIC = "[    3.1] Kernel panic - not syncing: sysrq triggered crash\n[    3.2] CPU: 0 PID: 1"
KVM_LOG = (
    "KVM internal error. Suberror: 1\n"
    "extra data[0]: 0x0000000000000000\n"
    "emulation failure\n"
    "RAX=0000000000000000 RBX=0000000000000000\n"
)


def ev(name: str, **data: object) -> QmpEvent:
    return QmpEvent(name=name, data=data)


@pytest.mark.parametrize("state", ["running", "suspended"])
def test_a_running_guest_is_healthy(state: str) -> None:
    assert from_qmp({"status": state}) == HEALTHY
    # history does not count once the guest runs again
    assert from_qmp({"status": state}, [ev("GUEST_PANICKED", action="pause"), ev("RESET")]).ok


def test_a_panicked_guest_fails_with_the_console_panic_line() -> None:
    health = from_qmp(
        {"status": "guest-panicked"}, [ev("GUEST_PANICKED", action="pause")], console=PANIC
    )
    assert health == Health(
        False, "the guest panicked: Kernel panic - not syncing: sysrq triggered crash"
    )
    assert from_qmp({"status": "guest-panicked"}) == Health(False, "the guest panicked")


def test_a_panic_event_explains_a_stopped_guest() -> None:
    # QEMU's order: the panic, then the STOP of the vCPUs
    events = [ev("GUEST_PANICKED", action="pause"), ev("STOP")]
    assert from_qmp({"status": "paused"}, events).reason == "the guest panicked"
    # a panic from before the last reset says nothing about the guest now
    old = [ev("GUEST_PANICKED", action="pause"), ev("STOP"), ev("RESET"), ev("STOP")]
    assert from_qmp({"status": "paused"}, old).reason == "the server is not running (paused)"


def test_an_internal_error_names_qemus_message() -> None:
    health = from_qmp({"status": "internal-error"}, [ev("STOP")], qemu_log=KVM_LOG)
    assert not health.ok
    assert health.reason == (
        "the server stopped with an internal error: "
        "KVM internal error. Suberror: 1 (emulation failure)"
    )
    assert from_qmp({"status": "internal-error"}).reason == (
        "the server stopped with an internal error"
    )


@pytest.mark.parametrize(
    ("status", "events", "reason"),
    [
        ("io-error", [], "the server stopped on an I/O error"),
        ("watchdog", [], "the guest's watchdog expired"),
        ("shutdown", [ev("SHUTDOWN", guest=True, reason="guest-panic")],
         "the server shut down (guest-panic)"),
        ("shutdown", [], "the server shut down"),
        ("paused", [ev("STOP")], "the server is not running (paused)"),
        ("", [], "the server is not running (unknown state)"),
    ],
)  # fmt: skip
def test_every_other_state_is_a_failure_with_a_reason(
    status: str, events: list[QmpEvent], reason: str
) -> None:
    assert from_qmp({"status": status}, events) == Health(False, reason)


# -- the qemu driver against a fake QMP -------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bh", dir="/tmp") as tmp:  # unix socket paths
        yield Path(tmp)


@pytest.fixture
def driver(tmp_path: Path, short_dir: Path) -> Iterator[QemuPower]:
    config = AgentConfig(
        host_id="h1",
        endpoints=("127.0.0.1:1",),
        credential="h1.x",
        state_dir=tmp_path,
        run_dir_=short_dir,
    )
    workdir = tmp_path / "inst"
    workdir.mkdir()
    driver = QemuPower(workdir, config)
    # a process that passes for this server's QEMU (its command line has the tag)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", f"bmaas-{workdir.name}"]
    )
    driver.pidfile.write_text(str(proc.pid))
    try:
        yield driver
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
async def qmp(driver: QemuPower) -> AsyncIterator[FakeQmp]:
    fake = await FakeQmp(driver.qmp_socket).start()
    try:
        yield fake
    finally:
        await driver.aclose()
        await fake.aclose()


async def test_driver_reports_a_panic_and_a_reboot_recovers_it(
    driver: QemuPower, qmp: FakeQmp
) -> None:
    assert await driver.health() == HEALTHY
    driver.console.write_text(PANIC)
    await qmp.emit("GUEST_PANICKED", action="pause")
    qmp.run_state = "guest-panicked"
    health = await driver.health()
    assert not health.ok
    assert "Kernel panic - not syncing: sysrq triggered crash" in health.reason
    await driver.reboot()
    assert qmp.commands.index("system_reset") < qmp.commands.index("cont")
    assert qmp.run_state == "running"
    await qmp.emit("RESET", guest=False, reason="host-qmp-system-reset")
    assert await driver.health() == HEALTHY


async def test_a_health_event_wakes_the_agent_at_once(driver: QemuPower, qmp: FakeQmp) -> None:
    woken = asyncio.Event()
    driver.on_change = woken.set
    assert await driver.health() == HEALTHY  # the session is open from here on
    await qmp.emit("RESET", guest=True, reason="guest-reset")
    await qmp.emit("GUEST_PANICKED", action="pause")
    await asyncio.wait_for(woken.wait(), 5)
    assert [e.name for e in driver._qmp.events] == ["RESET", "GUEST_PANICKED"]  # type: ignore[union-attr]


async def test_driver_reports_an_internal_error_with_qemus_message(
    driver: QemuPower, qmp: FakeQmp
) -> None:
    (driver.workdir / "qemu.log").write_text(KVM_LOG)
    qmp.run_state = "internal-error"
    health = await driver.health()
    assert health == Health(
        False,
        "the server stopped with an internal error: "
        "KVM internal error. Suberror: 1 (emulation failure)",
    )


async def test_reboot_of_a_running_guest_does_not_cont(driver: QemuPower, qmp: FakeQmp) -> None:
    await driver.reboot()
    assert "system_reset" in qmp.commands
    assert "cont" not in qmp.commands


async def test_a_server_that_is_off_is_not_asked(tmp_path: Path, short_dir: Path) -> None:
    config = AgentConfig(
        host_id="h1", endpoints=("127.0.0.1:1",), credential="h1.x", state_dir=tmp_path,
        run_dir_=short_dir,
    )  # fmt: skip
    assert await QemuPower(tmp_path / "off", config).health() == HEALTHY
