"""``FakeCephAdmin``: ``CephAdmin``'s calls on a dict, for unit tests.

``down = True`` makes every call raise ``CephUnavailable`` (a monitor that
does not answer); ``locks`` maps an image to the client addresses holding
it, which ``fence`` moves to ``blocklist``.
"""

from __future__ import annotations

from control_plane.storage.errors import CephUnavailable


class FakeCephAdmin:
    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.locks: dict[str, list[str]] = {}
        self.blocklist: list[str] = []
        self.down = False
        self.calls: list[str] = []

    def _call(self, what: str) -> None:
        self.calls.append(what)
        if self.down:
            raise CephUnavailable("ceph (fake): cannot connect: timed out")

    def check(self) -> None:
        self._call("check")

    def images(self, prefix: str = "") -> list[str]:
        self._call("images")
        return sorted(n for n in self.sizes if n.startswith(prefix))

    def size(self, name: str) -> int | None:
        self._call(f"size {name}")
        return self.sizes.get(name)

    def ensure_volume(self, name: str, size_bytes: int) -> bool:
        self._call(f"ensure {name}")
        if self.sizes.get(name, -1) >= size_bytes:
            return False
        self.sizes[name] = size_bytes
        return True

    def remove(self, name: str) -> bool:
        self._call(f"remove {name}")
        return self.sizes.pop(name, None) is not None

    def fence(self, names: list[str], *, expire: float = 3600.0) -> list[str]:
        self._call(f"fence {' '.join(names)}")
        fenced = [a for n in names for a in self.locks.pop(n, [])]
        self.blocklist += fenced
        return fenced
