"""A region on Ceph RBD: cloud disks that live in the cluster, not on a host.

A real single-node Ceph (the session's ``ceph`` fixture), a real etcd and
control plane with ``[storage] backend = "rbd"``, and real agents (qemu
power driver) whose cards serve the boot disk with ``offload-blk --rbd``
to QEMU servers booting through UEFI.  Everything goes through the tenant
and operator APIs; the cluster is inspected with python-rbd.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
import rbd

from bmaas.v1 import common_pb2, operator_pb2, tenant_pb2
from control_plane.domain.storage import Backend, StorageConfig
from host_agent.config import StorageSettings
from tools.region.agent_process import AgentProcess
from tools.region.ceph import CephCluster
from tools.region.etcd import EtcdServer
from tools.region.guest import GuestImage, disk_with
from tools.region.region import Region, qemu_agent, running_region
from tools.region.wait import wait_for
from tools.region.world import enroll

pytestmark = pytest.mark.asyncio(loop_scope="session")
S = common_pb2

#: seconds a host stays UNREACHABLE before its instance moves (the region's is 60)
FAILOVER_GRACE = 2.0

BOOTED = """
echo "RBD-BOOT $(cat /sys/block/vda/size)"
echo BMAAS-IDLE
while true; do sleep 1; done
"""


@pytest_asyncio.fixture(loop_scope="session")
async def rbd_region(etcd: EtcdServer, ceph: CephCluster) -> AsyncIterator[Region]:
    storage = StorageConfig(
        backend=Backend.RBD,
        pool=ceph.pool,
        ceph_conf=str(ceph.conf_path),
        client_id="admin",
        failover_grace=FAILOVER_GRACE,
    )
    async with running_region(etcd, storage=storage) as r:
        yield r


def _agent_storage(ceph: CephCluster) -> StorageSettings:
    return StorageSettings(backend="rbd", pool=ceph.pool, ceph_conf=ceph.conf_path)


def _children(ceph: CephCluster, parent: str, snap: str) -> set[str]:
    with ceph.ioctx() as ioctx, rbd.Image(ioctx, parent, snapshot=snap, read_only=True) as img:
        return {name for _pool, name in img.list_children()}


def _parent(ceph: CephCluster, name: str) -> str:
    with ceph.ioctx() as ioctx, rbd.Image(ioctx, name, read_only=True) as img:
        spec = img.get_parent_image_spec()
        return f"{spec['image_name']}@{spec['snap_name']}"


async def test_instances_boot_through_uefi_from_rbd_clones_of_one_snapshot(
    rbd_region: Region, ceph: CephCluster, guest_image: GuestImage, tmp_path: Path
) -> None:
    region = rbd_region
    image_id = f"rbdboot{uuid.uuid4().hex[:6]}"
    image = await region.register_image(
        image_id, disk_with(guest_image, BOOTED, tmp_path / "b.raw")
    )
    second, cred2 = await enroll(
        region.clients, host_id="metal-2", host_class="small", power_driver="qemu", register=False
    )
    names: list[str] = []
    async with (
        qemu_agent(region, tmp_path / "a1", guest_image, storage=_agent_storage(ceph)),
        qemu_agent(
            region,
            tmp_path / "a2",
            guest_image,
            host=second.name,
            credential=cred2,
            storage=_agent_storage(ceph),
        ),
    ):
        for _ in range(2):
            name = await region.create(image)
            names.append(name)
            await region.wait_state(name, S.INSTANCE_STATE_RUNNING, timeout=240)
        hosts = set()
        for name in names:
            booted = await region.wait_console(name, r"RBD-BOOT (\d+)", 240)
            assert int(booted.group(1)) * 512 == 1 << 30  # the clone, grown to the image's 1 GiB
            hosts.add((await region.instance(name)).host)
        assert len(hosts) == 2  # one instance per host: two cards opened two clones

        tenant = region.tenant.rsplit("/", 1)[-1]
        boots = {f"boot.{tenant}.{n.rsplit('/', 1)[1]}" for n in names}
        parent = f"image.{image_id}"
        assert _children(ceph, parent, "base") == boots  # one snapshot, two layered clones
        assert {_parent(ceph, b) for b in boots} == {f"{parent}@base"}
        # nothing of the boot disks was written to the hosts
        for agent_dir in ("a1", "a2"):
            assert not list((tmp_path / agent_dir / "volumes").glob("*.img"))

        for name in names:
            await region.action("Terminate", name)
        for name in names:
            await region.wait_state(name, S.INSTANCE_STATE_TERMINATED, timeout=120)

    # the storage controller deletes the boot disks of terminated instances
    async def gone() -> bool:
        return not (boots & set(ceph_images(ceph)))

    assert await wait_for(gone, 60, 0.5)


def ceph_images(ceph: CephCluster) -> list[str]:
    with ceph.ioctx() as ioctx:
        return list(rbd.RBD().list(ioctx))


#: first boot: 4 MiB of random data at 513 MiB of the boot disk (past the
#: image's partitions), synced, then a marker at 512 MiB; every later boot
#: (on whichever host) finds the marker and prints the data's checksum
FAILOVER = """
M=$(dd if=/dev/vda bs=1M skip=512 count=1 2>/dev/null | head -c 19)
if [ "$M" = "BMAAS-FAILOVER-DATA" ]; then
  echo "FO-AFTER $(dd if=/dev/vda bs=1M skip=513 count=4 2>/dev/null | md5sum | cut -c1-32)"
else
  dd if=/dev/urandom of=/dev/vda bs=1M seek=513 count=4 conv=fsync 2>/dev/null
  echo BMAAS-FAILOVER-DATA | dd of=/dev/vda bs=1M seek=512 conv=notrunc,fsync 2>/dev/null
  sync
  echo 3 > /proc/sys/vm/drop_caches
  echo "FO-BEFORE $(dd if=/dev/vda bs=1M skip=513 count=4 2>/dev/null | md5sum | cut -c1-32)"
fi
echo BMAAS-IDLE
while true; do sleep 1; done
"""


async def _create(region: Region, image: str, itype: str) -> str:
    async def attempt() -> str:

        try:
            inst = await region.clients.tenant.CreateInstance(
                tenant_pb2.CreateInstanceRequest(
                    request_id=str(uuid.uuid4()),
                    instance=common_pb2.Instance(
                        name=f"{region.tenant}/instances/fo{uuid.uuid4().hex[:6]}",
                        instance_type=itype,
                        image=image,
                    ),
                ),
                metadata=region.tenant_md,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            return ""
        return str(inst.name)

    return str(await wait_for(attempt, 60, 0.3))


async def _host_state(region: Region, host: str) -> int:
    got = await region.clients.operator.GetHost(
        tenant_pb2.GetRequest(name=host), metadata=region.clients.op_md
    )
    return int(got.state)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_dead_hosts_instance_runs_again_elsewhere_with_its_data(
    rbd_region: Region, ceph: CephCluster, guest_image: GuestImage, tmp_path: Path
) -> None:
    region = rbd_region
    image_id = f"fo{uuid.uuid4().hex[:6]}"
    image = await region.register_image(
        image_id, disk_with(guest_image, FAILOVER, tmp_path / "fo.raw")
    )
    itype = await region.clients.operator.CreateInstanceType(
        operator_pb2.CreateInstanceTypeRequest(
            instance_type=common_pb2.InstanceType(
                name=f"instanceTypes/fo-{image_id}", host_class=image_id, cpus=1, memory_gib=1
            )
        ),
        metadata=region.clients.op_md,
    )
    storage = {"backend": "rbd", "pool": ceph.pool, "ceph_conf": str(ceph.conf_path)}
    agents = []
    for n in (1, 2):
        host, cred = await enroll(
            region.clients,
            host_id=f"{image_id}-{n}",
            host_class=image_id,
            power_driver="qemu",
            register=False,
            local_disk_gib=0,  # cloud disks only: movable
        )
        agents.append(
            AgentProcess(
                port=region.port,
                host=host.name,
                credential=cred,
                dir=tmp_path / f"h{n}",
                probe_kernel=guest_image.kernel,
                storage=storage,
            )
        )
    old, new = agents
    old_host, new_host = (f"hosts/{image_id}-{n}" for n in (1, 2))
    try:
        old.start()
        name = await _create(region, image, itype.name)
        await region.wait_state(name, S.INSTANCE_STATE_RUNNING, timeout=240)
        assert (await region.instance(name)).host == old_host
        before = (await region.wait_console(name, r"FO-BEFORE ([0-9a-f]{32})", 240)).group(1)
        new.start()

        async def new_available() -> bool:
            return await _host_state(region, new_host) == S.HOST_STATE_AVAILABLE

        await wait_for(new_available, 90, 0.3)
        clients = old.rbd_clients()
        assert clients  # the old card served the boot disk through librbd
        old_servers = old.server_pids()

        old.kill()  # the host dies: agent, server and back-ends, all at once
        died = time.monotonic()

        async def moved() -> common_pb2.Instance | None:
            inst = await region.instance(name)
            return inst if inst.host == new_host else None

        await wait_for(moved, 120, 0.3)
        inst = await region.wait_state(name, S.INSTANCE_STATE_RUNNING, timeout=240)
        print(f"host death to RUNNING elsewhere: {time.monotonic() - died:.1f} s")
        assert inst.name == name  # it keeps its name
        cond = next(c for c in inst.conditions if c.type == "Moved")
        assert cond.status == "True" and cond.reason == "HostFailed"
        assert old_host in cond.message
        after = (await region.wait_console(name, r"FO-AFTER ([0-9a-f]{32})", 240)).group(1)
        assert after == before  # the same disk, with what the guest wrote and synced

        # the old card was fenced: its client is on the OSD blocklist, so a
        # write through it fails (what a fenced client sees is tested on the
        # engine: tests/integration/test_rbd_engine.py)
        out = ceph.mon_command({"prefix": "osd blocklist ls", "format": "json"}).decode()
        listed, _ = json.JSONDecoder().raw_decode(out)  # a count line may follow the JSON
        fenced = {str(e.get("addr", "")) for e in listed}
        assert set(clients.values()) <= fenced, (clients, fenced)

        # the old host comes back: it never resumes the instance, and is cleaned
        old.start()

        async def old_available() -> bool:
            return await _host_state(region, old_host) == S.HOST_STATE_AVAILABLE

        await wait_for(old_available, 120, 0.3)
        assert not any(_alive(pid) for pid in old_servers)
        assert not old.server_pids() or not any(_alive(p) for p in old.server_pids())
        inst = await region.instance(name)
        assert (inst.host, inst.state) == (new_host, S.INSTANCE_STATE_RUNNING)

        await region.action("Terminate", name)
        await region.wait_state(name, S.INSTANCE_STATE_TERMINATED, timeout=120)
    finally:
        for agent in agents:
            agent.stop()
