"""Where the repository and its cached artefacts are."""

from __future__ import annotations

from pathlib import Path

#: the repository root (the launchers run their processes here)
ROOT = Path(__file__).resolve().parents[2]
#: kernel + initramfs built by ``make guest-image``
GUEST_DIR = ROOT / ".cache" / "guest"
