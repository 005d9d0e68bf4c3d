"""The guest image boots under QEMU (server stand-in flags) to userspace."""

from __future__ import annotations

from tests.conftest import QemuFactory
from tools.region.guest import READY, command_output

BOOT_TIMEOUT_S = 120.0


async def test_guest_boots_to_userspace_and_runs_a_command(qemu_server: QemuFactory) -> None:
    script = (
        "echo answer=$((6 * 7))\n"
        "for m in virtio_ring virtio virtio_pci virtio_blk failover net_failover virtio_net; do\n"
        '  grep -q "^$m " /proc/modules && echo loaded=$m\n'
        "done\n"
    )
    server = await qemu_server(script=script)
    await server.wait_for_serial(READY, timeout=BOOT_TIMEOUT_S)
    match = await server.wait_for_serial(r"BMAAS-CMD-EXIT=(\d+)", timeout=60)
    assert match.group(1) == "0"
    out = command_output(server.serial_text())
    assert "answer=42" in out
    for module in ("virtio_pci", "virtio_blk", "virtio_net"):
        assert f"loaded={module}" in out
    # the guest powers off after its command; QEMU exits by itself (-no-reboot)
    assert await server.wait(timeout=30) == 0


async def test_failing_command_reports_its_status(qemu_server: QemuFactory) -> None:
    server = await qemu_server(script="exit 3\n", name="failing")
    match = await server.wait_for_serial(r"BMAAS-CMD-EXIT=(\d+)", timeout=BOOT_TIMEOUT_S)
    assert match.group(1) == "3"
