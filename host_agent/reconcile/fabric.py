"""The VPC ports this host carries (one per NIC) and the fabric holding them.

``nics`` adds a port for every desired NIC, teardown and hot-unplug remove
them, and ``reconcile()`` makes the host's bridges and VXLAN devices match
the ports (``host_agent.network.HostFabric``, created on the first port).
"""

from __future__ import annotations

import logging

from host_agent.config import AgentConfig
from host_agent.network import HostFabric
from host_agent.reconcile.errors import ProvisionFailed
from offload.network.errors import NetworkError
from offload.network.fabric import VpcPort

log = logging.getLogger("host_agent.reconcile")


class Fabric:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.ports: dict[str, VpcPort] = {}
        self._fabric: HostFabric | None = None

    def add(self, nic: str, port: VpcPort) -> None:
        self.ports[nic] = port

    def remove(self, nic: str) -> bool:
        """Drop *nic*'s port; True if it had one (then ``reconcile()``)."""
        return self.ports.pop(nic, None) is not None

    async def reconcile(self) -> None:
        if self._fabric is None:
            if not self.ports:
                return
            self._fabric = HostFabric(
                netns=self.config.netns, underlay_address=self.config.underlay_address
            )
        try:
            result = await self._fabric.reconcile(self.ports.values())
        except NetworkError as exc:
            raise ProvisionFailed(f"VPC fabric: {exc}") from exc
        if result.changes:
            log.info("fabric: %s", "; ".join(result.changes))

    def close(self) -> None:
        if self._fabric is not None:
            self._fabric.close()
            self._fabric = None
