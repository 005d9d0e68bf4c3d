"""The newc archive that hands the guest its command is valid cpio."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tools.region.guest import command_output, newc_archive


def test_archive_lists_and_extracts_with_gnu_cpio(tmp_path: Path) -> None:
    archive = newc_archive({"bmaas/cmd": (0o755, b"#!/bin/sh\necho hi\n"), "a": (0o644, b"xyz")})
    assert len(archive) % 4 == 0
    listing = subprocess.run(
        ["cpio", "-it", "--quiet"], input=archive, capture_output=True, check=True
    ).stdout.decode()
    assert listing.split() == ["a", "bmaas/cmd"]
    subprocess.run(
        ["cpio", "-id", "--quiet"], input=archive, cwd=tmp_path, check=True, capture_output=True
    )
    extracted = tmp_path / "bmaas" / "cmd"
    assert extracted.read_bytes() == b"#!/bin/sh\necho hi\n"
    assert extracted.stat().st_mode & 0o777 == 0o755


def test_command_output_is_between_markers() -> None:
    serial = "boot noise\nBMAAS-GUEST-READY kernel=6.1\nline1\nline2\nBMAAS-CMD-EXIT=0\n"
    assert command_output(serial) == "line1\nline2\n"
