"""The guest image (kernel + initramfs from ``make guest-image``) and a way
to hand it a command.

The base initramfs runs ``/bmaas/cmd`` if present (see ``images/init``).
Linux unpacks concatenated initramfs archives in order, so
``GuestImage.initrd_with(script)`` writes the base archive followed by a
small gzip-compressed newc archive holding ``/bmaas/cmd``: a test, a
benchmark or the demo runs any shell script inside the guest without
rebuilding the image, and reads what it printed from the serial console
between ``BMAAS-GUEST-READY`` and ``BMAAS-CMD-EXIT=<status>``.  The script
runs under ``set -e``; one that must go on past a failing command starts
with ``set +e``.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tools.diskimage import build_disk_image
from tools.region.paths import GUEST_DIR, ROOT

READY = r"BMAAS-GUEST-READY"
EXIT_RE = re.compile(r"BMAAS-CMD-EXIT=(\d+)")


def newc_archive(files: dict[str, tuple[int, bytes]]) -> bytes:
    """A cpio "newc" archive with regular files ``{path: (mode, data)}``."""
    out = bytearray()
    for ino, (name, (mode, data)) in enumerate(sorted(files.items()), start=1):
        out += _newc_entry(name, mode=0o100000 | mode, data=data, ino=ino)
    out += _newc_entry("TRAILER!!!", mode=0, data=b"", ino=0)
    return bytes(out)


def _newc_entry(name: str, *, mode: int, data: bytes, ino: int) -> bytes:
    encoded = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    entry = header + encoded
    entry += b"\0" * (-len(entry) % 4)
    entry += data + b"\0" * (-len(data) % 4)
    return entry


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initramfs: Path

    @classmethod
    def build(cls, directory: Path = GUEST_DIR, *, quiet: bool = False) -> GuestImage:
        """Build (or reuse the cached) image via images/build.sh (*quiet*: its
        output is not shown)."""
        subprocess.run(
            [str(ROOT / "images" / "build.sh"), str(directory)], check=True, capture_output=quiet
        )
        return cls(kernel=directory / "vmlinuz", initramfs=directory / "initramfs.cpio.gz")

    def initrd_with(self, script: str, dest: Path) -> Path:
        """Write an initrd at *dest* that runs *script* (``sh``) in the guest."""
        with dest.open("wb") as out, self.initramfs.open("rb") as base:
            shutil.copyfileobj(base, out)
            # The kernel skips zero padding between archives; align the next
            # one so the gzip member boundary is unambiguous.
            out.write(b"\0" * (-out.tell() % 512))
            body = "#!/bin/sh\nset -e\n" + script
            out.write(gzip.compress(newc_archive({"bmaas/cmd": (0o755, body.encode())}), mtime=0))
        return dest


def disk_with(
    image: GuestImage, script: str, dest: Path, *, quiet: bool = True, extra: str = ""
) -> Path:
    """A UEFI-bootable raw disk (``tools.diskimage``) whose guest runs *script*.

    ``quiet`` keeps the kernel's boot log off the console, so several boots
    fit in one console tail; *extra* is appended to the kernel command line."""
    initrd = image.initrd_with(script, dest.with_suffix(".initrd"))
    cmdline = "console=ttyS0 quiet panic=-1" if quiet else "console=ttyS0 panic=-1"
    cmdline = f"{cmdline} {extra}".strip()
    try:
        return build_disk_image(
            kernel=image.kernel, initrd=initrd, out=dest, cmdline=cmdline, size_mib=32
        )
    finally:
        initrd.unlink(missing_ok=True)


def command_output(serial: str) -> str:
    """What /bmaas/cmd printed: the console text after the ready marker."""
    _, _, rest = serial.partition(READY)
    rest = rest.split("\n", 1)[1] if "\n" in rest else ""
    return EXIT_RE.split(rest, maxsplit=1)[0]
