"""The health mapping against a real QEMU under KVM running OVMF.

Whatever this machine's KVM does with the firmware, the health read from
QMP must agree with what the firmware really did, as seen on its serial
console: a firmware that reaches its boot manager (``BdsDxe``) is healthy;
one whose CPU stopped (on the development machine KVM stops OVMF's first
instructions with "KVM internal error. Suberror: 1 ... emulation failure"
when the CPU model is ``qemu64``) is a failure naming QEMU's message, never
healthy; and a QEMU that cannot start KVM at all never gets that far.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_agent.power.health import from_qmp
from host_agent.power.qemu import QemuError, QemuServer, ServerSpec, UefiFirmware
from host_agent.power.qmp import QmpClient, QmpError

pytestmark = pytest.mark.integration


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bk", dir="/tmp"))  # unix socket paths
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_health_agrees_with_what_the_firmware_did_under_kvm(
    tmp_path: Path, short_dir: Path
) -> None:
    spec = ServerSpec(
        name="kvm-health",
        serial_log=tmp_path / "serial.log",
        memory_mib=256,
        accel="kvm",
        firmware=UefiFirmware(vars=tmp_path / "vars.fd"),
        qmp_socket=short_dir / "qmp.sock",
        pvpanic=True,
        extra=("-cpu", "qemu64"),  # the last -cpu wins
    )
    async with QemuServer(spec) as server:
        try:
            qmp = await QmpClient.connect(short_dir / "qmp.sock", timeout=10)
        except QmpError:
            # no usable KVM: QEMU exits before it serves QMP, and says why
            with pytest.raises((QemuError, TimeoutError)):
                await server.wait_for_serial("BdsDxe", timeout=10)
            assert server.stderr_text().strip()
            return
        async with qmp:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            status: dict[str, object] = {}
            while loop.time() < deadline:
                status = await qmp.execute("query-status")
                if status["status"] != "running" or "BdsDxe" in server.serial_text():
                    break
                await asyncio.sleep(0.1)
            health = from_qmp(status, qmp.events, qemu_log=server.stderr_text())
            if "BdsDxe" in server.serial_text():
                assert health.ok, health
            else:
                assert status["status"] == "internal-error", status
                assert not health.ok
                assert "internal error" in health.reason, health.reason
