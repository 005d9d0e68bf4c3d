"""The rbd storage back-end of the control plane, against a real Ceph.

A real etcd, an in-process control plane (API + controllers) with
``[storage] backend = "rbd"`` on the session's single-node Ceph; volumes
are made through the tenant API and looked at in the pool with
python-rbd.  The fault test stops the cluster's only monitor while a
volume is created: the volume says why it waits and completes when the
monitor returns, with exactly one image of the right size.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
import rbd

from bmaas.v1 import common_pb2, tenant_pb2
from control_plane.domain.storage import Backend, StorageConfig
from tools.region.ceph import CephCluster
from tools.region.control_plane import Clients, InProcessControlPlane, bearer
from tools.region.etcd import EtcdServer
from tools.region.wait import wait_for
from tools.region.world import make_tenant

GIB = 1 << 30


@pytest_asyncio.fixture(loop_scope="session")
async def rbd_plane(
    etcd: EtcdServer, ceph: CephCluster
) -> AsyncIterator[tuple[Clients, tuple[tuple[str, str], ...], str]]:
    storage = StorageConfig(backend=Backend.RBD, pool=ceph.pool, ceph_conf=str(ceph.conf_path))
    async with (
        InProcessControlPlane(etcd, controllers=True, storage=storage) as plane,
        Clients(plane.port) as c,
    ):
        tenant, token = await make_tenant(c, f"t{uuid.uuid4().hex[:6]}")
        yield c, bearer(token), tenant


def _images(ceph: CephCluster, prefix: str) -> dict[str, int]:
    with ceph.ioctx() as ioctx:
        out = {}
        for name in rbd.RBD().list(ioctx):
            if name.startswith(prefix):
                try:
                    with rbd.Image(ioctx, name, read_only=True) as img:
                        out[name] = img.size()
                except rbd.ImageNotFound:
                    continue  # deleted between the listing and the open
        return out


def _provisioned(vol: common_pb2.Volume) -> common_pb2.Condition | None:
    return next((c for c in vol.conditions if c.type == "Provisioned"), None)


async def test_volume_waits_for_a_downed_monitor_then_completes_once(
    rbd_plane: tuple[Clients, tuple[tuple[str, str], ...], str], ceph: CephCluster
) -> None:
    c, md, tenant = rbd_plane
    tid = tenant.rsplit("/", 1)[-1]
    ceph.stop_mon()
    try:
        vol = await c.tenant.CreateVolume(
            tenant_pb2.CreateVolumeRequest(
                request_id=str(uuid.uuid4()),
                volume=common_pb2.Volume(name=f"{tenant}/volumes/data", size_gib=2),
            ),
            metadata=md,
        )

        async def waiting() -> common_pb2.Condition | None:
            got = await c.tenant.GetVolume(tenant_pb2.GetRequest(name=vol.name), metadata=md)
            cond = _provisioned(got)
            return cond if cond is not None and cond.status == "False" else None

        cond = await wait_for(waiting, 60, 0.5)
        assert cond.reason == "CephUnavailable"
        assert cond.message  # says what failed
    finally:
        ceph.restart_mon()

    async def done() -> common_pb2.Condition | None:
        got = await c.tenant.GetVolume(tenant_pb2.GetRequest(name=vol.name), metadata=md)
        cond = _provisioned(got)
        return cond if cond is not None and cond.status == "True" else None

    await wait_for(done, 90, 0.5)
    assert _images(ceph, f"vol.{tid}.") == {f"vol.{tid}.data": 2 * GIB}  # one, not two

    # grown through the API, deleted through the API
    await c.tenant.ResizeVolume(
        tenant_pb2.ResizeVolumeRequest(name=vol.name, size_gib=3), metadata=md
    )

    async def grown() -> bool:
        return _images(ceph, f"vol.{tid}.").get(f"vol.{tid}.data") == 3 * GIB

    await wait_for(grown, 60, 0.5)
    await c.tenant.DeleteVolume(tenant_pb2.DeleteRequest(name=vol.name), metadata=md)

    async def deleted() -> bool:
        return not _images(ceph, f"vol.{tid}.")

    await wait_for(deleted, 60, 0.5)


def _run(argv: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=120, cwd=tmp
    )


def test_a_missing_pool_is_one_line_at_start(
    etcd: EtcdServer, ceph: CephCluster, tmp_path: Path
) -> None:
    toml = tmp_path / "cp.toml"
    toml.write_text(
        f'[storage]\nbackend = "rbd"\npool = "no-such-pool"\nceph_conf = "{ceph.conf_path}"\n'
    )
    cp = _run(
        [
            "-m", "control_plane.main", "--etcd", f"http://{etcd.host}:{etcd.port}",
            "--listen", "127.0.0.1:0", "--config", str(toml), "--insecure",
        ],
        tmp_path,
    )  # fmt: skip
    assert cp.returncode == 1
    assert cp.stderr.strip().splitlines()[-1:] == [
        f"bmaas-control-plane: [storage]: ceph pool 'no-such-pool' does not exist "
        f"({ceph.conf_path})"
    ]
    cred = tmp_path / "cred"
    cred.write_text("host-9.secret")
    cred.chmod(0o600)
    agent = _run(
        [
            "-m", "host_agent.main", "--control-plane", "127.0.0.1:1", "--host-id", "host-9",
            "--credential-file", str(cred), "--state-dir", str(tmp_path / "state"),
            "--config", str(toml),
        ],
        tmp_path,
    )  # fmt: skip
    assert agent.returncode == 2
    lines = agent.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-pool" in lines[0], agent.stderr
    assert lines[0].startswith("bmaas-agent: error: [storage]: ")
    assert not (tmp_path / "state").exists()  # nothing started, nothing written
