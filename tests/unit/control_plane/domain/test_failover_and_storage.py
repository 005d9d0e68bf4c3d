"""The failover decision and the ``[storage]`` settings (pure domain code)."""

from __future__ import annotations

import dataclasses

import pytest

from control_plane.domain.compute import Instance
from control_plane.domain.conditions import ConditionStatus, ConditionType, set_condition
from control_plane.domain.errors import InvalidArgument
from control_plane.domain.failover import Move, Stay, Wait, decide, disk_images
from control_plane.domain.host import Disk, HardwareProfile, Host
from control_plane.domain.lifecycle import HostState, InstanceState
from control_plane.domain.storage import (
    Backend,
    StorageConfig,
    boot_image,
    parent_image,
    parse_storage,
    volume_image,
)

RBD = StorageConfig(backend=Backend.RBD, pool="p", ceph_conf="/c", failover_grace=60)


def _host(
    *, state: HostState = HostState.UNREACHABLE, since: float = 100.0, disks: int = 0
) -> Host:
    conds = set_condition(
        (),
        type_=ConditionType.HOST_REACHABLE,
        status=ConditionStatus.FALSE,
        reason="HeartbeatLeaseExpired",
        now=since,
    )
    return Host(
        id="h1",
        host_class="small",
        zone="z1",
        rack="r1",
        hardware=HardwareProfile(
            cpus=4,
            memory_gib=8,
            disks=tuple(Disk(name=f"nvme{i}", size_gib=1) for i in range(disks)),
        ),
        state=state,
        assigned_instance="tenants/t1/instances/i1",
        conditions=conds,
    )


def _inst(state: InstanceState = InstanceState.RUNNING) -> Instance:
    return Instance(
        tenant="t1",
        id="i1",
        instance_type="instanceTypes/small",
        image="images/deb",
        state=state,
        host="hosts/h1",
        volumes=("tenants/t1/volumes/v1",),
    )


def test_waits_for_the_grace_then_moves() -> None:
    assert decide(_host(), _inst(), storage=RBD, now=130.0) == Wait(30.0)
    assert decide(_host(), _inst(), storage=RBD, now=160.0) == Move()
    assert decide(_host(), _inst(), storage=RBD, now=1000.0) == Move()


def test_never_moves_disks_that_are_on_the_host() -> None:
    files = decide(_host(), _inst(), storage=StorageConfig(), now=1000.0)
    assert isinstance(files, Stay) and "file" in files.reason
    local = decide(_host(disks=1), _inst(), storage=RBD, now=1000.0)
    assert isinstance(local, Stay) and "nvme0" in local.reason


@pytest.mark.parametrize("state", [HostState.ALLOCATED, HostState.CLEANING, HostState.MAINTENANCE])
def test_only_unreachable_hosts_fail_over(state: HostState) -> None:
    assert decide(_host(state=state), _inst(), storage=RBD, now=1000.0) is None


@pytest.mark.parametrize(
    "state",
    [InstanceState.STOPPED, InstanceState.TERMINATING, InstanceState.FAILED, InstanceState.PENDING],
)
def test_only_movable_instances_move(state: InstanceState) -> None:
    assert decide(_host(), _inst(state), storage=RBD, now=1000.0) is None


def test_an_instance_bound_elsewhere_is_not_moved_twice() -> None:
    moved = dataclasses.replace(_inst(), host="hosts/h2")
    assert decide(_host(), moved, storage=RBD, now=1000.0) is None
    assert decide(_host(), None, storage=RBD, now=1000.0) is None


def test_disk_images_name_the_boot_disk_and_the_volumes() -> None:
    assert disk_images(_inst()) == ["boot.t1.i1", "vol.t1.v1"]
    assert boot_image("t1", "i1") == "boot.t1.i1"
    assert parent_image("deb") == "image.deb@base"
    assert volume_image("t1", "v1") == "vol.t1.v1"


def test_storage_settings() -> None:
    assert parse_storage(None) == StorageConfig()
    assert not parse_storage({"backend": "file"}).rbd
    cfg = parse_storage({"backend": "rbd", "pool": "p", "ceph_conf": "/etc/ceph/ceph.conf"})
    assert cfg.rbd and cfg.client_id == "admin" and cfg.failover_grace == 60.0
    assert parse_storage({"backend": "rbd", "pool": "p", "ceph_conf": "c", "failover_grace": 5})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"backend": "nfs"}, "'nfs' is not 'file' or 'rbd'"),
        ({"backend": "rbd", "ceph_conf": "c"}, "[storage].pool: required"),
        ({"backend": "rbd", "pool": "p"}, "[storage].ceph_conf: required"),
        ({"pool": 3}, "[storage].pool: expected a string"),
        ({"failover_grace": -1}, "failover_grace: expected seconds >= 0"),
        ({"failover_grace": True}, "failover_grace: expected seconds >= 0"),
        ({"poool": "x"}, "unknown setting 'poool'"),
        ("rbd", "expected a table"),
    ],
)
def test_bad_storage_settings_are_one_line(raw: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_storage(raw)  # type: ignore[arg-type]
