"""The fuzz targets, one module per guest-facing parser (see ``fuzz``).

Only names here: importing a target imports ``offload``, which must happen
inside the harness's instrumentation.
"""

from __future__ import annotations

from typing import Final

__all__ = ["TARGETS"]

TARGETS: Final = (
    "chain",
    "blk",
    "net",
    "vhost_user",
    "dhcp",
    "arp",
    "ipv4",
    "metadata",
)
