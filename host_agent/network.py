"""The host's VPC fabric, driven from one thread that lives in the host's
network namespace.

``offload.network.fabric.Fabric`` speaks netlink through pyroute2.  Given a
namespace name, pyroute2 creates its socket by forking a helper process that
enters the namespace; forking a process that runs gRPC's threads is unsafe
(the child can abort while re-initialising threading).  A network namespace
is a per-thread property on Linux, so instead one worker thread enters the
host's namespace once (``setns``) and every fabric call runs on that thread:
its netlink socket is opened there, in the right namespace, without a fork.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Iterable

from offload.network.fabric import Fabric, ReconcileResult, VpcPort


def _enter(netns: str) -> None:
    from pyroute2.netns import setns

    setns(netns, flags=0)  # never create it: the host's namespace must exist


class HostFabric:
    def __init__(self, *, netns: str, underlay_address: str) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="fabric",
            initializer=functools.partial(_enter, netns) if netns else None,
        )
        self._underlay = underlay_address
        self._fabric: Fabric | None = None

    def _reconcile(self, ports: list[VpcPort]) -> ReconcileResult:
        if self._fabric is None:
            self._fabric = Fabric(None, underlay_ip=self._underlay)
        return self._fabric.reconcile(ports)

    async def reconcile(self, ports: Iterable[VpcPort]) -> ReconcileResult:
        """Converge the bridges, VXLAN devices and TAP ports on *ports*."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._reconcile, list(ports))

    def _close(self) -> None:
        if self._fabric is not None:
            self._fabric.close()
            self._fabric = None

    def close(self) -> None:
        """Close the netlink socket and stop the thread (the fabric stays as it is)."""
        self._executor.submit(self._close).result()
        self._executor.shutdown()
