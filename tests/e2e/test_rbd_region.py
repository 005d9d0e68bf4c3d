"""A region on Ceph RBD: cloud disks that live in the cluster, not on a host.

A real single-node Ceph (the session's ``ceph`` fixture), a real etcd and
control plane with ``[storage] backend = "rbd"``, and real agents (qemu
power driver) whose cards serve the boot disk with ``offload-blk --rbd``
to QEMU servers booting through UEFI.  Everything goes through the tenant
and operator APIs; the cluster is inspected with python-rbd.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import rbd

from bmaas.v1 import common_pb2
from control_plane.domain.storage import Backend, StorageConfig
from host_agent.config import StorageSettings
from tools.region.ceph import CephCluster
from tools.region.etcd import EtcdServer
from tools.region.guest import GuestImage, disk_with
from tools.region.region import Region, qemu_agent, running_region
from tools.region.wait import wait_for
from tools.region.world import enroll

pytestmark = pytest.mark.asyncio(loop_scope="session")
S = common_pb2

BOOTED = """
echo "RBD-BOOT $(cat /sys/block/vda/size)"
echo BMAAS-IDLE
while true; do sleep 1; done
"""


@pytest_asyncio.fixture(loop_scope="session")
async def rbd_region(etcd: EtcdServer, ceph: CephCluster) -> AsyncIterator[Region]:
    storage = StorageConfig(
        backend=Backend.RBD, pool=ceph.pool, ceph_conf=str(ceph.conf_path), client_id="admin"
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
