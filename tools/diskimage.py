"""Build a UEFI-bootable raw disk image (GPT + EFI system partition) without mounting.

The image is what a tenant's boot cloud disk looks like to the server's
firmware: OVMF finds the EFI system partition (ESP), loads the removable-media
path ``/EFI/BOOT/BOOTX64.EFI``, and that GRUB loads ``/vmlinuz`` and
``/initrd.img`` from the same partition.

How it is put together, every step on plain files (no loop devices, no root):

1. ``grub-mkimage -O x86_64-efi`` (modules from Debian ``grub-efi-amd64-bin``)
   builds ``BOOTX64.EFI`` with a small script embedded as its early config:
   serial terminal, ``linux``, ``initrd``, ``boot``.  The early config runs
   before GRUB's menu ever exists, so there is no menu and no timeout.
   ``grub-mkimage`` is used rather than ``grub-mkstandalone`` because the
   latter packs its files into a memdisk tarball stamped with the current
   time, so two builds never match; ``grub-mkimage`` output is byte-stable.
2. The ESP is a separate file: ``mkfs.vfat --invariant`` with a fixed volume
   id, then ``mmd``/``mcopy`` (mtools) copy the three files in.  mtools takes
   "now" from ``SOURCE_DATE_EPOCH``, so directory entries carry a fixed time.
3. The disk file is created sparse, ``sfdisk`` writes a GPT with a fixed disk
   GUID and partition UUID (one ESP from 1 MiB to 1 MiB before the end, room
   for the backup GPT), and the ESP file is copied in at 1 MiB, skipping
   all-zero chunks so the result stays sparse.

The same inputs give the same bytes.  A missing tool raises
``MissingToolError`` naming the tool and the Debian package that ships it.

Errors::

    DiskImageError
    ├── MissingToolError     a required program or GRUB's module dir is absent
    ├── ImageTooSmallError   kernel + initrd + loader do not fit the ESP
    └── ToolFailedError      a tool exited non-zero (its output is attached)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

MIB = 1 << 20
SECTOR = 512
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
DISK_GUID = "8B2C4E3A-5D6F-4A1B-9C0D-B3AA50000001"
ESP_UUID = "8B2C4E3A-5D6F-4A1B-9C0D-B3AA50000002"
ESP_VOLUME_ID = "b3aa5001"
ESP_LABEL = "BMAAS-ESP"
SOURCE_DATE_EPOCH = "946684800"  # 2000-01-01; FAT cannot store times before 1980
GRUB_EFI_MODULES = Path("/usr/lib/grub/x86_64-efi")
GRUB_MODULES = ("part_gpt", "fat", "serial", "terminal", "linux", "boot", "echo")
DEFAULT_CMDLINE = "console=ttyS0 panic=-1"
_CMDLINE_OK = re.compile(r"[A-Za-z0-9 _.,:=/+@%-]*")
_COPY_CHUNK = MIB

# program -> the Debian package that ships it
TOOLS = {
    "grub-mkimage": "grub-common",
    "mkfs.vfat": "dosfstools",
    "mmd": "mtools",
    "mcopy": "mtools",
    "sfdisk": "fdisk",
}


class DiskImageError(Exception):
    """The disk image could not be built."""


class MissingToolError(DiskImageError):
    """A program (or GRUB's x86_64-efi modules) is not installed."""


class ImageTooSmallError(DiskImageError):
    """The files do not fit the EFI system partition."""


class ToolFailedError(DiskImageError):
    """A tool exited with a non-zero status."""


def build_disk_image(
    *,
    kernel: Path,
    initrd: Path,
    out: Path,
    cmdline: str = DEFAULT_CMDLINE,
    size_mib: int = 64,
) -> Path:
    """Write a GPT disk at *out* whose ESP boots *kernel* + *initrd* with *cmdline*."""
    if not _CMDLINE_OK.fullmatch(cmdline):
        raise ValueError(f"kernel command line has characters GRUB would interpret: {cmdline!r}")
    if size_mib < 4:
        raise ValueError(f"size_mib must be at least 4, got {size_mib}")
    tools = _find_tools()
    esp_bytes = (size_mib - 2) * MIB
    with tempfile.TemporaryDirectory(prefix="bmaas-diskimage-") as tmp:
        work = Path(tmp)
        loader = work / "BOOTX64.EFI"
        _build_loader(tools, loader, cmdline=cmdline, work=work)
        payload = sum(p.stat().st_size for p in (kernel, initrd, loader))
        # FAT tables, root directory and cluster rounding need some room.
        if payload + MIB > esp_bytes:
            need = -(-(payload + MIB) // MIB) + 2
            raise ImageTooSmallError(
                f"kernel + initrd + loader need {payload} bytes; a {size_mib} MiB disk has a "
                f"{esp_bytes // MIB} MiB ESP (use size_mib >= {need})"
            )
        esp = work / "esp.img"
        _build_esp(
            tools, esp, esp_bytes, files={"vmlinuz": kernel, "initrd.img": initrd}, loader=loader
        )
        partial = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            _build_disk(tools, partial, esp, size_mib=size_mib)
            partial.replace(out)
        finally:
            partial.unlink(missing_ok=True)
    return out


def _find_tools() -> dict[str, str]:
    found: dict[str, str] = {}
    for tool, package in TOOLS.items():
        path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
        if path is None:
            raise MissingToolError(f"{tool} not found (install the Debian package {package})")
        found[tool] = path
    if not (GRUB_EFI_MODULES / "linux.mod").exists():
        raise MissingToolError(
            f"GRUB's x86_64-efi modules are not in {GRUB_EFI_MODULES} "
            "(install the Debian package grub-efi-amd64-bin)"
        )
    return found


def _run(argv: Sequence[str], *, stdin: str | None = None) -> None:
    env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, MTOOLS_SKIP_CHECK="1", LC_ALL="C")
    proc = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise ToolFailedError(
            f"{Path(argv[0]).name} exited with {proc.returncode}: "
            f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
        )


def grub_script(cmdline: str) -> str:
    """GRUB's embedded early config: serial console, then boot the ESP's kernel."""
    return (
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial\n"
        "terminal_output serial\n"
        "echo 'bmaas: booting /vmlinuz'\n"
        f"linux /vmlinuz {cmdline}\n"
        "initrd /initrd.img\n"
        "boot\n"
    )


def _build_loader(tools: dict[str, str], dest: Path, *, cmdline: str, work: Path) -> None:
    config = work / "early.cfg"
    config.write_text(grub_script(cmdline))
    _run([
        tools["grub-mkimage"], "-O", "x86_64-efi", "-d", str(GRUB_EFI_MODULES),
        "-p", "/EFI/BOOT", "-c", str(config), "-o", str(dest), *GRUB_MODULES,
    ])  # fmt: skip


def _build_esp(
    tools: dict[str, str], esp: Path, size: int, *, files: dict[str, Path], loader: Path
) -> None:
    with esp.open("wb") as f:
        f.truncate(size)
    _run([tools["mkfs.vfat"], "--invariant", "-i", ESP_VOLUME_ID, "-n", ESP_LABEL, str(esp)])
    image = ["-i", str(esp)]
    _run([tools["mmd"], *image, "::/EFI", "::/EFI/BOOT"])
    _run([tools["mcopy"], *image, str(loader), "::/EFI/BOOT/BOOTX64.EFI"])
    for name, src in files.items():
        _run([tools["mcopy"], *image, str(src), f"::/{name}"])


def sfdisk_script(size_mib: int) -> str:
    """The GPT layout: one ESP from 1 MiB to 1 MiB before the end of the disk."""
    start = MIB // SECTOR
    sectors = (size_mib - 2) * MIB // SECTOR
    return (
        "label: gpt\n"
        f"label-id: {DISK_GUID}\n"
        f"start={start}, size={sectors}, type={ESP_TYPE}, uuid={ESP_UUID}, name=ESP\n"
    )


def _build_disk(tools: dict[str, str], disk: Path, esp: Path, *, size_mib: int) -> None:
    with disk.open("wb") as f:
        f.truncate(size_mib * MIB)
    sfdisk = [tools["sfdisk"], "--quiet", "--no-reread", "--no-tell-kernel", str(disk)]
    _run(sfdisk, stdin=sfdisk_script(size_mib))
    zero = bytes(_COPY_CHUNK)
    with esp.open("rb") as src, disk.open("r+b") as dst:
        offset = MIB
        while chunk := src.read(_COPY_CHUNK):
            if chunk != zero[: len(chunk)]:
                dst.seek(offset)
                dst.write(chunk)
            offset += len(chunk)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.diskimage",
        description="Build a UEFI-bootable raw disk image (GPT + ESP with GRUB, kernel, initrd).",
    )
    parser.add_argument("--kernel", type=Path, required=True)
    parser.add_argument("--initrd", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cmdline", default=DEFAULT_CMDLINE)
    parser.add_argument("--size-mib", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        out = build_disk_image(
            kernel=args.kernel,
            initrd=args.initrd,
            out=args.out,
            cmdline=args.cmdline,
            size_mib=args.size_mib,
        )
    except (DiskImageError, ValueError, OSError) as exc:
        print(f"diskimage: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
