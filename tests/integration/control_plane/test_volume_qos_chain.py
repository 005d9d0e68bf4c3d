"""Volume QoS through the whole chain: the tenant API, the agent (devices on,
fake power driver: no server), a real ``offload-blk`` per volume, measured
through the driver-side front-end (``offload.testing``) on the volume's
socket.  UpdateVolume on the running volume: its IOPS drop to the limit."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from bmaas.v1 import common_pb2, operator_pb2, tenant_pb2
from host_agent.devices import BlkSpec
from offload.testing import VhostUserBlkFrontend
from tools.region.agents import running_agents
from tools.region.control_plane import Clients, InProcessControlPlane
from tools.region.wait import wait_for
from tools.region.world import build_world

LIMIT = 40


def qd1_iops(socket: Path, n: int) -> float:
    with VhostUserBlkFrontend(socket) as fe:
        q = fe.queues[0]
        started = time.monotonic()
        for i in range(n):
            assert q.read(8 * (i % 64), 4096).status == 0
        return n / (time.monotonic() - started)


async def test_update_volume_throttles_the_running_back_end(
    cp_ctl: InProcessControlPlane, tmp_path: Path
) -> None:
    raw = tmp_path / "tiny.raw"
    disk = bytearray(1 << 20)
    disk[510:512] = b"\x55\xaa"  # an MBR boot signature: the agent checks for one
    raw.write_bytes(disk)
    async with Clients(cp_ctl.port) as c:
        world = await build_world(c, hosts=1)
        image = await c.operator.RegisterImage(
            operator_pb2.RegisterImageRequest(
                image=common_pb2.Image(
                    name="images/tiny", os="debian-12", source_uri=f"file://{raw}", size_gib=1
                )
            ),
            metadata=c.op_md,
        )
        async with running_agents(
            port=c.port, hosts=world.hosts, state_root=tmp_path / "agents", devices_=True
        ) as agents:
            (agent,) = agents.values()
            backends = agent.reconciler.ctx.backends
            vol = await c.tenant.CreateVolume(
                tenant_pb2.CreateVolumeRequest(volume=common_pb2.Volume(size_gib=1)),
                metadata=world.md,
            )
            await c.tenant.CreateInstance(
                tenant_pb2.CreateInstanceRequest(
                    instance=common_pb2.Instance(
                        instance_type=world.instance_type, image=image.name, volumes=[vol.name]
                    )
                ),
                metadata=world.md,
            )

            async def served() -> bool:
                b = backends.get(vol.name)
                return b is not None and b.spec.socket.exists() and bool(b.stats())

            await wait_for(served, timeout=60)
            backend = backends[vol.name]
            socket = backend.spec.socket
            assert await asyncio.to_thread(qd1_iops, socket, 200) > 3 * LIMIT

            got = await c.tenant.GetVolume(tenant_pb2.GetRequest(name=vol.name), metadata=world.md)
            await c.tenant.UpdateVolume(
                tenant_pb2.UpdateVolumeRequest(name=vol.name, etag=got.etag, max_iops=LIMIT),
                metadata=world.md,
            )

            async def limited() -> bool:
                return backend.stats().get("max_iops") == LIMIT

            await wait_for(limited, timeout=30)
            assert isinstance(backend.spec, BlkSpec)
            assert json.loads(backend.spec.limits_file.read_text())["max_iops"] == LIMIT
            await asyncio.to_thread(qd1_iops, socket, LIMIT + 5)  # spend the burst
            throttled = await asyncio.to_thread(qd1_iops, socket, 2 * LIMIT)
            assert 0.5 * LIMIT < throttled <= 1.15 * LIMIT, throttled
