"""tools.diskimage: the GPT layout, GRUB's script, input checks, and a real build."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from tools import diskimage
from tools.diskimage import (
    MIB,
    MissingToolError,
    build_disk_image,
    grub_script,
    sfdisk_script,
)


def _inputs(tmp_path: Path, *, kernel_bytes: int = 4096) -> tuple[Path, Path]:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"K" * kernel_bytes)
    initrd.write_bytes(b"I" * 1000)
    return kernel, initrd


def test_esp_spans_from_one_mib_to_one_mib_before_the_end() -> None:
    script = sfdisk_script(64)
    assert "label: gpt" in script
    assert "start=2048, size=126976, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B" in script


def test_grub_script_boots_the_esp_kernel_on_the_serial_console() -> None:
    script = grub_script("console=ttyS0 quiet")
    assert "terminal_output serial" in script
    assert "linux /vmlinuz console=ttyS0 quiet\n" in script
    assert "initrd /initrd.img\n" in script
    assert script.endswith("boot\n")


@pytest.mark.parametrize("cmdline", ["a; reboot", "x=$y", "a\nboot", 'a"b'])
def test_cmdline_grub_would_interpret_is_rejected(tmp_path: Path, cmdline: str) -> None:
    kernel, initrd = _inputs(tmp_path)
    with pytest.raises(ValueError, match="GRUB would interpret"):
        build_disk_image(kernel=kernel, initrd=initrd, out=tmp_path / "d.raw", cmdline=cmdline)


def test_missing_tool_is_named_with_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diskimage, "TOOLS", {"bmaas-no-such-tool": "bmaas-pkg"})
    kernel, initrd = _inputs(tmp_path)
    with pytest.raises(MissingToolError, match=r"bmaas-no-such-tool.*bmaas-pkg"):
        build_disk_image(kernel=kernel, initrd=initrd, out=tmp_path / "d.raw")


def test_files_larger_than_the_esp_are_refused(tmp_path: Path) -> None:
    kernel, initrd = _inputs(tmp_path, kernel_bytes=5 * MIB)
    with pytest.raises(diskimage.ImageTooSmallError, match="size_mib >= "):
        build_disk_image(kernel=kernel, initrd=initrd, out=tmp_path / "d.raw", size_mib=4)
    assert not (tmp_path / "d.raw").exists()


def test_build_is_a_gpt_disk_with_a_fat_esp_and_is_reproducible(tmp_path: Path) -> None:
    kernel, initrd = _inputs(tmp_path)
    first = build_disk_image(kernel=kernel, initrd=initrd, out=tmp_path / "a.raw", size_mib=8)
    second = build_disk_image(kernel=kernel, initrd=initrd, out=tmp_path / "b.raw", size_mib=8)
    data = first.read_bytes()
    assert len(data) == 8 * MIB
    assert data[510:512] == b"\x55\xaa"  # protective MBR
    assert data[512:520] == b"EFI PART"
    entries_lba = struct.unpack_from("<Q", data, 512 + 72)[0]
    first_lba, last_lba = struct.unpack_from("<QQ", data, entries_lba * 512 + 32)
    assert (first_lba, last_lba) == (2048, 2048 + 6 * 2048 - 1)
    esp = data[MIB : 7 * MIB]
    assert esp[510:512] == b"\x55\xaa"
    assert esp[43:54] == b"BMAAS-ESP  "
    assert b"BOOTX64 EFI" in esp and b"VMLINUZ" in esp
    assert b"K" * 4096 in esp and b"I" * 1000 in esp
    digest = hashlib.sha256
    assert digest(data).digest() == digest(second.read_bytes()).digest()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.raw",
        "b.raw",
        "initrd.img",
        "vmlinuz",
    ]
