"""The NIC step hands the instance's metadata-token mode to offload-net."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from host_agent.desired import DesiredInstance, DesiredNic
from host_agent.devices import BlkSpec, NetSpec
from host_agent.reconcile.context import Context
from host_agent.reconcile.nics import nics


class StubContext:
    """Just what ``nics`` uses of ``Context``: records the specs it starts."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.config = SimpleNamespace(
            devices=True, underlay_address="192.0.2.1", nic_mtu=1500, netns=""
        )
        self.specs: list[NetSpec] = []
        self.backends: dict[str, Any] = {}
        self.fabric = SimpleNamespace(add=lambda *_: None, reconcile=self._reconciled)

    async def _reconciled(self) -> None:
        return None

    def instance_dir(self, name: str) -> Path:
        return self.tmp / name.replace("/", "_")

    def socket_path(self, instance: str, device_id: str) -> Path:
        return self.tmp / f"{device_id}.sock"

    async def start_backend(self, spec: BlkSpec | NetSpec) -> Any:
        assert isinstance(spec, NetSpec)
        self.specs.append(spec)
        return SimpleNamespace(pid=lambda: 0)


@pytest.mark.parametrize("mode", ["required", "optional"])
async def test_offload_net_gets_the_instance_metadata_tokens(tmp_path: Path, mode: str) -> None:
    ctx = StubContext(tmp_path)
    inst = DesiredInstance(
        name="tenants/acme/instances/i-1",
        metadata_tokens=mode,
        nics=(
            DesiredNic(
                name="tenants/acme/networkInterfaces/n-1",
                mac="52:54:00:00:00:01",
                private_ip="10.0.0.5",
                subnet_cidr="10.0.0.0/24",
                gateway_ip="10.0.0.1",
                vni=7,
                vpc="tenants/acme/vpcs/v-1",
            ),
        ),
    )
    await nics(cast(Context, ctx), inst)
    (spec,) = ctx.specs
    assert spec.metadata_tokens == mode
    argv = spec.args(tmp_path / "stats")
    assert argv[argv.index("--metadata-tokens") + 1] == mode
