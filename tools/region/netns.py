"""Network namespaces for emulated hosts, created and always removed by name.

``NetNamespace`` creates ``bmaas-<tag>-<random>`` (``ip netns add``) and
removes exactly that namespace on ``close()``; it never touches namespaces it
did not create.  ``run()`` executes a command inside it (``ip netns exec``).
(pyroute2's ``netns.create`` forks a helper, and a fork in a test process
that already runs gRPC's threads can crash the child, so this uses
iproute2.)
"""

from __future__ import annotations

import secrets
import subprocess
from types import TracebackType


class NetNamespace:
    def __init__(self, tag: str = "host") -> None:
        self.name = f"bmaas-{tag}-{secrets.token_hex(3)}"
        self._created = False

    def create(self) -> NetNamespace:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
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
            subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)

    def __enter__(self) -> NetNamespace:
        return self.create()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
