"""``QmpClient`` against a real QEMU: commands, errors, events, and the end of a session.

Each test starts the server stand-in (``QemuServer``) with no kernel and no
disk (its firmware finds nothing to boot and waits, which is all a QMP session
needs) and a QMP socket in a short temp dir, then connects a ``QmpClient``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from host_agent.power.qemu import QemuServer, ServerSpec
from host_agent.power.qmp import QmpClient, QmpCommandError, QmpConnectionError

pytestmark = pytest.mark.integration


@pytest.fixture
async def qemu(tmp_path: Path) -> AsyncIterator[QemuServer]:
    sock_dir = Path(tempfile.mkdtemp(prefix="bq", dir="/tmp"))
    server = QemuServer(
        ServerSpec(
            name="qmp",
            serial_log=tmp_path / "serial.log",
            memory_mib=64,
            qmp_socket=sock_dir / "qmp.sock",
            hotplug_slots=1,
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()
        shutil.rmtree(sock_dir, ignore_errors=True)


async def _connect(server: QemuServer) -> QmpClient:
    assert server.spec.qmp_socket is not None
    return await QmpClient.connect(server.spec.qmp_socket, timeout=30)


async def test_greeting_and_query_status(qemu: QemuServer) -> None:
    async with await _connect(qemu) as qmp:
        assert qmp.greeting["version"]["qemu"]["major"] >= 7
        status = await qmp.execute("query-status")
        assert status["status"] == "running"
        assert status["running"] is True
        # a command with arguments, whose names contain dashes
        ports = await qmp.execute("qom-list", path="/machine/peripheral")
        assert "hp0" in {p["name"] for p in ports}


async def test_errors_carry_qemu_class_and_description(qemu: QemuServer) -> None:
    async with await _connect(qemu) as qmp:
        with pytest.raises(QmpCommandError) as missing:
            await qmp.execute("bmaas-no-such-command")
        assert missing.value.error_class == "CommandNotFound"
        assert "bmaas-no-such-command" in missing.value.desc
        with pytest.raises(QmpCommandError) as bad:
            await qmp.execute("device_del", id="bmaas-no-such-device")
        assert bad.value.error_class == "DeviceNotFound"
        # the session is still usable after an error
        assert (await qmp.execute("query-status"))["status"] == "running"


async def test_events_are_kept_until_waited_for(qemu: QemuServer) -> None:
    async with await _connect(qemu) as qmp:
        await qmp.execute("stop")
        await qmp.execute("cont")
        # both events may have arrived already; neither is lost
        stop = await qmp.wait_event("STOP", timeout=10)
        resume = await qmp.wait_event("RESUME", timeout=10)
        assert stop.timestamp <= resume.timestamp
        assert [e.name for e in qmp.events][:2] == ["STOP", "RESUME"]
        with pytest.raises(TimeoutError):
            await qmp.wait_event("STOP", timeout=0.5)  # the one STOP was consumed


async def test_powerdown_is_a_request_and_reset_ends_a_no_reboot_server(qemu: QemuServer) -> None:
    async with await _connect(qemu) as qmp:
        assert await qmp.execute("system_powerdown") == {}
        await qmp.wait_event("POWERDOWN", timeout=10)
        # nothing in the guest acts on the ACPI button, so the server keeps running
        assert (await qmp.execute("query-status"))["status"] == "running"
        # the stand-in runs with -no-reboot: a reset ends the process
        assert await qmp.execute("system_reset") == {}
        shutdown = await qmp.wait_event("SHUTDOWN", timeout=10)
        assert shutdown.data.get("reason") == "host-qmp-system-reset"
        assert await qemu.wait(timeout=30) == 0


async def test_quit_ends_qemu_and_the_session(qemu: QemuServer) -> None:
    qmp = await _connect(qemu)
    try:
        assert await qmp.execute("quit") == {}
        shutdown = await qmp.wait_event("SHUTDOWN", timeout=10)
        assert shutdown.data.get("guest") is False
        assert await qemu.wait(timeout=30) == 0
        with pytest.raises(QmpConnectionError):
            await qmp.wait_event("NEVER", timeout=10)
        with pytest.raises(QmpConnectionError):
            await qmp.execute("query-status")
    finally:
        await qmp.aclose()


async def test_connect_fails_clearly_without_a_socket(tmp_path: Path) -> None:
    with pytest.raises(QmpConnectionError, match="no QMP socket"):
        await QmpClient.connect(tmp_path / "absent.sock", timeout=0.3)


async def test_a_second_client_is_told_the_socket_is_taken(qemu: QemuServer) -> None:
    assert qemu.spec.qmp_socket is not None
    async with await _connect(qemu) as qmp:
        with pytest.raises(QmpConnectionError, match="no QMP greeting"):
            await QmpClient.connect(qemu.spec.qmp_socket, timeout=1.0)
        assert (await qmp.execute("query-status"))["running"] is True
    # once the first session is closed, the next client is greeted
    async with await _connect(qemu) as again:
        assert (await again.execute("query-status"))["running"] is True
