"""Network namespaces for emulated hosts, created and always removed by name.

``NetNamespace`` creates ``bmaas-<tag>-<random>`` through pyroute2 and removes
exactly that namespace on ``close()``; it never touches namespaces it did not
create.  ``run()`` executes a command inside it (``ip netns exec``).
"""

from __future__ import annotations

import secrets
import subprocess
from types import TracebackType

from pyroute2 import netns


class NetNamespace:
    def __init__(self, tag: str = "host") -> None:
        self.name = f"bmaas-{tag}-{secrets.token_hex(3)}"
        self._created = False

    def create(self) -> NetNamespace:
        netns.create(self.name)
        self._created = True
        self.run("ip", "link", "set", "lo", "up")
        return self

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True, check=check
        )

    def close(self) -> None:
        if self._created:
            self._created = False
            if self.name in netns.listnetns():
                netns.remove(self.name)

    def __enter__(self) -> NetNamespace:
        return self.create()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
