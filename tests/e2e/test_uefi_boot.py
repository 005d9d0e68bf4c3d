"""The server boots its cloud disk through UEFI firmware, as a real server would.

How the test works: ``tools.diskimage`` builds a GPT disk whose EFI system
partition holds GRUB, the guest kernel and an initrd that carries the test's
script (``GuestImage.initrd_with``).  A real ``offload-blk`` serves that
disk, and QEMU starts with OVMF (read-only code flash, a per-server copy of
the variable store), no ``-kernel``, and the disk as ``vhost-user-blk-pci``
with ``bootindex=0``.  Everything the firmware, GRUB and Linux read comes
through the card.  The script, running in the booted guest, reports what it
sees: the EFI runtime in sysfs, the command line GRUB passed, the GPT
signature of its own boot disk and the ESP's volume label; the test checks
them and that QEMU powered off cleanly.  The boot time (QEMU start to GRUB's
first line, and to the guest's ready line) is printed.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_agent.power.qemu import OVMF_VARS, BlkDisk, QemuServer, ServerSpec, UefiFirmware
from tests.harness.offload_blk import OffloadBlkProcess
from tools.diskimage import build_disk_image
from tools.region.guest import EXIT_RE, READY, GuestImage, command_output

pytestmark = pytest.mark.e2e

BOOT_TIMEOUT_S = 120.0
DISK_MIB = 64
MARKER = "bmaas.test=uefi-disk"
GRUB_LINE = "bmaas: booting /vmlinuz"  # echoed by the disk's GRUB (tools/diskimage.py)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for unix sockets (``tmp_path`` may be too long for AF_UNIX)."""
    path = Path(tempfile.mkdtemp(prefix="bu", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_server_boots_its_cloud_disk_through_ovmf(
    guest_image: GuestImage, qemu_accel: str, sock_dir: Path, tmp_path: Path
) -> None:
    script = (
        "[ -d /sys/firmware/efi ] && echo efi=yes || echo efi=no\n"
        "echo cmdline=$(cat /proc/cmdline)\n"
        "echo vda_sectors=$(cat /sys/block/vda/size)\n"
        "echo gpt_signature=$(dd if=/dev/vda bs=512 skip=1 count=1 2>/dev/null | head -c 8)\n"
        "echo esp_label=$(dd if=/dev/vda1 bs=1 skip=43 count=11 2>/dev/null)\n"
    )
    initrd = guest_image.initrd_with(script, tmp_path / "initrd.img")
    disk = build_disk_image(
        kernel=guest_image.kernel,
        initrd=initrd,
        out=tmp_path / "disk.raw",
        cmdline=f"console=ttyS0 panic=-1 quiet {MARKER}",
        size_mib=DISK_MIB,
    )
    backend = OffloadBlkProcess(
        socket_path=sock_dir / "boot.sock", image=disk, log_path=tmp_path / "offload-blk.log"
    )
    firmware = UefiFirmware(vars=tmp_path / "OVMF_VARS.fd")
    server = QemuServer(
        ServerSpec(
            name="uefi",
            serial_log=tmp_path / "serial.log",
            accel=qemu_accel,
            memory_mib=512,
            firmware=firmware,
            disks=(BlkDisk(backend.socket_path, bootindex=0),),
        )
    )
    await backend.start()
    try:
        started = time.monotonic()
        await server.start()
        await server.wait_for_serial(GRUB_LINE, timeout=BOOT_TIMEOUT_S)
        to_grub = time.monotonic() - started
        await server.wait_for_serial(READY, timeout=BOOT_TIMEOUT_S)
        to_ready = time.monotonic() - started
        match = await server.wait_for_serial(EXIT_RE.pattern, timeout=60)
        serial = server.serial_text()
        output = command_output(serial)
        assert match.group(1) == "0", output
        assert await server.wait(timeout=30) == 0  # the guest powered off
    finally:
        await server.aclose()
        await backend.stop()
    print(
        f"\nUEFI boot ({qemu_accel}): GRUB after {to_grub:.1f}s, guest ready after {to_ready:.1f}s"
    )

    values = dict(re.findall(r"^(\w+)=(.*?)\s*$", output, re.M))
    assert values.get("efi") == "yes", output
    assert MARKER in values.get("cmdline", ""), output  # GRUB's embedded config ran
    assert values.get("vda_sectors") == str(DISK_MIB * 2048), output
    assert values.get("gpt_signature") == "EFI PART", output
    assert values.get("esp_label") == "BMAAS-ESP", output
    # Firmware and GRUB ran before the kernel; no -kernel was involved.
    assert serial.index("BdsDxe: starting") < serial.index(GRUB_LINE) < serial.index(READY)
    assert "-kernel" not in server.argv
    # OVMF wrote its boot entries to this server's own variable store only.
    assert firmware.vars.read_bytes() != OVMF_VARS.read_bytes()
    assert "front-end connected" in backend.log_text()
