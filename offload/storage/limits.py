"""A volume's QoS limits as the host agent hands them over: flags, then a file.

``offload-blk --max-iops N --max-mbps N`` sets the limits a volume starts
with; ``--limits FILE`` names a small JSON object, ``{"max_iops": N,
"max_mbps": N}``, that the agent rewrites (whole, then renamed) when the
tenant changes the volume's limits, and then sends SIGHUP: the back-end
re-reads it and swaps in a new ``QosLimiter``.  0 means no limit; MB/s are
10^6 bytes per second, as in the tenant API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from offload.errors import StorageError
from offload.storage.qos import QosLimiter

__all__ = ["UNLIMITED", "Limits", "read_limits"]

_MAX = (1 << 32) - 1


@dataclass(frozen=True, slots=True)
class Limits:
    """IOPS and MB/s; 0 is unlimited."""

    max_iops: int = 0
    max_mbps: int = 0

    def __post_init__(self) -> None:
        for name in ("max_iops", "max_mbps"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= _MAX:
                raise StorageError(f"{name} {value!r} is not an integer in 0..{_MAX}")

    def limiter(self) -> QosLimiter | None:
        """The token buckets for these limits (None when unlimited)."""
        if not self.max_iops and not self.max_mbps:
            return None
        return QosLimiter(
            iops=self.max_iops or None,
            bytes_per_second=self.max_mbps * 1_000_000 or None,
        )

    def __str__(self) -> str:
        if not self.max_iops and not self.max_mbps:
            return "no QoS limit"
        iops = f"{self.max_iops} IOPS" if self.max_iops else "unlimited IOPS"
        mbps = f"{self.max_mbps} MB/s" if self.max_mbps else "unlimited MB/s"
        return f"{iops}, {mbps}"


UNLIMITED = Limits()


def read_limits(path: Path) -> Limits:
    """The limits in ``path``; a missing key is 0 (unlimited), an unknown key an error."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read limits {path}: {exc}") from exc
    if not isinstance(data, dict) or set(data) - {"max_iops", "max_mbps"}:
        raise StorageError(f"limits {path}: want an object with max_iops and max_mbps")
    return Limits(data.get("max_iops", 0), data.get("max_mbps", 0))
