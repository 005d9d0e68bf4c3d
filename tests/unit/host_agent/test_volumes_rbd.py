"""``RbdVolumes``: the agent's RBD volume source, on a fake pool.

The pool's own calls (import, clone, grow) are tested against a real Ceph
(tests/e2e/test_rbd_region.py); here: which calls the source makes, what
it hands provisioning, and what it never does (delete a cloud disk,
create a data volume).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from host_agent.config import AgentConfig, StorageSettings
from host_agent.desired import DesiredInstance, DesiredVolume
from host_agent.devices import RbdDisk
from host_agent.reconcile.errors import ProvisionFailed
from host_agent.reconcile.volumes import GIB, RbdVolumes, VolumeNotReady, volume_source
from host_agent.storage.images import ImageCache


class _Pool:
    def __init__(self, sizes: dict[str, int], calls: list[str]) -> None:
        self.sizes, self.calls = sizes, calls

    def __enter__(self) -> _Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        pass

    def exists(self, name: str) -> bool:
        self.calls.append(f"exists {name}")
        return name in self.sizes

    def size(self, name: str) -> int:
        return self.sizes[name]

    def ensure_size(self, name: str, size: int) -> None:
        self.calls.append(f"grow {name}")
        self.sizes[name] = max(self.sizes[name], size)

    def remove(self, name: str) -> bool:  # never called: asserted through calls
        self.calls.append(f"remove {name}")
        return True


class _Source(RbdVolumes):
    def __init__(self, config: AgentConfig, sizes: dict[str, int]) -> None:
        super().__init__(config, ImageCache(config.state_dir / "images"))
        self.sizes = sizes
        self.calls: list[str] = []

    def _pool(self) -> Any:
        return _Pool(self.sizes, self.calls)


def _config(tmp_path: Path) -> AgentConfig:
    return AgentConfig(
        host_id="h1",
        endpoints=("127.0.0.1:1",),
        credential="h1.x",
        state_dir=tmp_path,
        storage=StorageSettings(backend="rbd", pool="bmaas", ceph_conf=Path("/c"), client_id="bm"),
    )


INST = DesiredInstance(name="tenants/t1/instances/i1", image="images/d")
BOOT = DesiredVolume(
    volume="tenants/t1/instances/i1/boot",
    size_gib=1,
    boot=True,
    rbd_image="boot.t1.i1",
    rbd_parent="image.d@base",
)


def test_the_back_end_is_chosen_by_the_storage_section(tmp_path: Path) -> None:
    images = ImageCache(tmp_path / "images")
    assert isinstance(volume_source(_config(tmp_path), images), RbdVolumes)
    files = AgentConfig(host_id="h1", endpoints=("a:1",), credential="h1.x", state_dir=tmp_path)
    assert not isinstance(volume_source(files, images), RbdVolumes)


def test_an_existing_boot_disk_is_kept_and_never_deleted(tmp_path: Path) -> None:
    src = _Source(_config(tmp_path), {"boot.t1.i1": GIB})
    disk = asyncio.run(src.boot_disk(INST, BOOT, mark=lambda _: None))
    assert disk == RbdDisk(pool="bmaas", image="boot.t1.i1", conf=Path("/c"), client_id="bm")
    assert src.calls == ["exists boot.t1.i1", "grow boot.t1.i1"]  # no import, no clone
    asyncio.run(src.boot_disk(INST, BOOT, mark=lambda _: None))
    assert len(src.calls) == 2  # known now: not looked up again
    src.delete_boot_disk(INST.name)
    assert not any(c.startswith("remove") for c in src.calls)
    assert src.sizes == {"boot.t1.i1": GIB}


def test_a_boot_disk_without_a_parent_fails_the_instance(tmp_path: Path) -> None:
    src = _Source(_config(tmp_path), {})
    orphan = DesiredVolume(volume="b", size_gib=1, boot=True, rbd_image="boot.t1.i1")
    with pytest.raises(ProvisionFailed, match="no parent"):
        asyncio.run(src.boot_disk(INST, orphan, mark=lambda _: None))


def test_data_volumes_wait_for_the_control_plane_and_report_growth(tmp_path: Path) -> None:
    vol = DesiredVolume(volume="tenants/t1/volumes/v1", size_gib=2, rbd_image="vol.t1.v1")
    src = _Source(_config(tmp_path), {})
    with pytest.raises(VolumeNotReady):
        asyncio.run(src.data_volume(vol))
    assert "vol.t1.v1" not in src.sizes  # the agent never creates a volume
    src.sizes["vol.t1.v1"] = 2 * GIB
    disk, grown = asyncio.run(src.data_volume(vol))
    assert isinstance(disk, RbdDisk) and disk.image == "vol.t1.v1" and not grown
    src.sizes["vol.t1.v1"] = 3 * GIB  # grown by the control plane
    assert asyncio.run(src.data_volume(vol))[1] is True
    assert asyncio.run(src.data_volume(vol))[1] is False


def test_a_volume_without_an_rbd_name_is_a_file(tmp_path: Path) -> None:
    src = _Source(_config(tmp_path), {})
    vol = DesiredVolume(volume="tenants/t1/volumes/v2", size_gib=1)
    path, grown = asyncio.run(src.data_volume(vol))
    assert isinstance(path, Path) and path.stat().st_size == GIB and not grown
    assert src.calls == []
