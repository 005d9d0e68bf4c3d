"""The storage and failover controllers' reconcile passes, on fakes.

``FakeCephAdmin`` (shipped with ``control_plane.storage``) plays the
cluster; ``_Records`` plays the few store calls the controllers make
(get, update, update_many, list_all, clock), with etags bumped on every
write so a stale write is ``Aborted`` as in etcd.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, cast

import pytest

from control_plane.controllers.config import ControllerConfig
from control_plane.controllers.failover_controller import FailoverController
from control_plane.controllers.outcome import DONE, Transient
from control_plane.controllers.storage_controller import StorageController
from control_plane.domain.compute import Instance
from control_plane.domain.conditions import (
    ConditionStatus,
    ConditionType,
    find_condition,
    set_condition,
)
from control_plane.domain.errors import Aborted, NotFound
from control_plane.domain.host import Disk, HardwareProfile, Host
from control_plane.domain.lifecycle import HostState, InstanceState
from control_plane.domain.storage import Backend, StorageConfig
from control_plane.domain.volume import Volume
from control_plane.storage import CephAdmin
from control_plane.storage.fake import FakeCephAdmin
from control_plane.store import Store

R = TypeVar("R")
GIB = 1 << 30
RBD = StorageConfig(backend=Backend.RBD, pool="p", ceph_conf="/c", failover_grace=60)


class _Records:
    def __init__(self, *objs: Any) -> None:
        self.now = 1000.0
        self.objs: dict[str, Any] = {}
        self._rev = 0
        for obj in objs:
            self._put(obj)

    def _put(self, obj: Any) -> Any:
        self._rev += 1
        obj = dataclasses.replace(obj, etag=str(self._rev))
        self.objs[obj.name] = obj
        return obj

    def clock(self) -> float:
        return self.now

    async def get(self, cls: type[R], name: str, *, revision: int = 0) -> R:
        try:
            return cast(R, self.objs[name])
        except KeyError:
            raise NotFound(name) from None

    async def update(self, obj: R) -> R:
        (out,) = await self.update_many([obj])
        return out

    async def update_many(self, objs: list[R]) -> list[R]:
        for obj in objs:
            current = self.objs.get(obj.name)  # type: ignore[attr-defined]
            if current is None or current.etag != obj.etag:  # type: ignore[attr-defined]
                raise Aborted("moved")
        return [self._put(o) for o in objs]

    async def list_all(self, cls: type[R], **_: Any) -> tuple[list[R], int]:
        return [o for o in self.objs.values() if isinstance(o, cls)], self._rev


def _storage(records: _Records, admin: FakeCephAdmin) -> StorageController:
    cfg = ControllerConfig(storage=RBD)
    return StorageController(cast(Store, records), cfg, cast(CephAdmin, admin))


def _failover(records: _Records, admin: FakeCephAdmin) -> FailoverController:
    cfg = ControllerConfig(storage=RBD)
    return FailoverController(cast(Store, records), cfg, cast(CephAdmin, admin))


VOL = Volume(tenant="t1", id="v1", size_gib=2)


async def test_a_volume_waits_for_ceph_with_a_reason_then_is_made_once() -> None:
    records, admin = _Records(VOL), FakeCephAdmin()
    ctl = _storage(records, admin)
    admin.down = True
    out = await ctl.reconcile(VOL.name)
    assert isinstance(out, Transient) and out.delay is not None
    cond = find_condition(records.objs[VOL.name].conditions, ConditionType.PROVISIONED)
    assert cond is not None and cond.status == ConditionStatus.FALSE
    assert cond.reason == "CephUnavailable" and "timed out" in cond.message
    assert admin.sizes == {}

    admin.down = False
    assert await ctl.reconcile(VOL.name) == DONE
    assert await ctl.reconcile(VOL.name) == DONE  # again: nothing doubled
    assert admin.sizes == {"vol.t1.v1": 2 * GIB}
    assert [c for c in admin.calls if c.startswith("ensure")] == ["ensure vol.t1.v1"] * 3
    cond = find_condition(records.objs[VOL.name].conditions, ConditionType.PROVISIONED)
    assert cond is not None and cond.status == ConditionStatus.TRUE


async def test_a_grown_volume_grows_and_a_deleted_one_goes() -> None:
    records, admin = _Records(VOL), FakeCephAdmin()
    ctl = _storage(records, admin)
    await ctl.reconcile(VOL.name)
    records._put(dataclasses.replace(records.objs[VOL.name], size_gib=5))
    await ctl.reconcile(VOL.name)
    assert admin.sizes == {"vol.t1.v1": 5 * GIB}
    del records.objs[VOL.name]
    assert await ctl.reconcile(VOL.name) == DONE
    assert admin.sizes == {}


async def test_resync_finds_orphans_and_only_ours() -> None:
    live = Instance(tenant="t1", id="i1", instance_type="x", image="images/d", host="hosts/h")
    gone = dataclasses.replace(live, id="i2", state=InstanceState.TERMINATED)
    records, admin = _Records(VOL, live, gone), FakeCephAdmin()
    for name in ("vol.t1.v1", "vol.t1.old", "boot.t1.i1", "boot.t1.i2", "image.d", "other"):
        admin.sizes[name] = GIB
    ctl = _storage(records, admin)
    keys = set(await ctl.resync_keys())
    assert keys == {VOL.name, "rbd:vol.t1.old", "rbd:boot.t1.i2"}
    for key in keys:
        await ctl.reconcile(key)
    assert set(admin.sizes) == {"vol.t1.v1", "boot.t1.i1", "image.d", "other"}
    # an image whose owner is alive is never removed, even if asked
    assert await ctl.reconcile("rbd:boot.t1.i1") == DONE
    assert await ctl.reconcile("rbd:image.d") == DONE
    assert "boot.t1.i1" in admin.sizes and "image.d" in admin.sizes


def _world(*, disks: tuple[Any, ...] = ()) -> tuple[Host, Instance]:
    host = Host(
        id="h1",
        host_class="small",
        zone="z1",
        rack="r1",
        hardware=HardwareProfile(cpus=4, memory_gib=8, disks=disks),
        state=HostState.UNREACHABLE,
        assigned_instance="tenants/t1/instances/i1",
        conditions=set_condition(
            (),
            type_=ConditionType.HOST_REACHABLE,
            status=ConditionStatus.FALSE,
            reason="HeartbeatLeaseExpired",
            now=950.0,
        ),
    )
    inst = Instance(
        tenant="t1",
        id="i1",
        instance_type="instanceTypes/small",
        image="images/d",
        host="hosts/h1",
        state=InstanceState.RUNNING,
        volumes=("tenants/t1/volumes/v1",),
        user_data="#!/bin/sh",
        network_interfaces=("tenants/t1/networkInterfaces/n1",),
    )
    return host, inst


async def test_failover_waits_for_the_grace_then_fences_before_moving() -> None:
    host, inst = _world()
    records, admin = _Records(host, inst), FakeCephAdmin()
    admin.locks = {"boot.t1.i1": ["127.0.0.1:0/1"], "vol.t1.v1": ["127.0.0.1:0/1"]}
    ctl = _failover(records, admin)
    assert await ctl.resync_keys() == ["h1"]
    out = await ctl.reconcile("h1")
    assert isinstance(out, Transient) and out.delay == pytest.approx(10.0)
    assert admin.calls == []  # nothing fenced inside the grace

    records.now = 1011.0
    admin.down = True  # the fence cannot be made: nothing moves
    assert isinstance(await ctl.reconcile("h1"), Transient)
    stuck = records.objs[inst.name]
    assert stuck.host == "hosts/h1" and stuck.state == InstanceState.RUNNING
    cond = find_condition(stuck.conditions, ConditionType.MOVED)
    assert cond is not None and cond.reason == "CephUnavailable"

    admin.down = False
    assert await ctl.reconcile("h1") == DONE
    assert admin.blocklist == ["127.0.0.1:0/1", "127.0.0.1:0/1"]
    moved = records.objs[inst.name]
    assert moved.state == InstanceState.PENDING and moved.host == "" and moved.zone == "z1"
    # a new generation: a report from a host it ran on before is stale from now on
    assert moved.generation == inst.generation + 1
    assert (moved.user_data, moved.volumes, moved.network_interfaces) == (
        inst.user_data,
        inst.volumes,
        inst.network_interfaces,
    )
    cond = find_condition(moved.conditions, ConditionType.MOVED)
    assert cond is not None and cond.status == ConditionStatus.TRUE
    assert cond.reason == "HostFailed" and "hosts/h1" in cond.message
    old = records.objs[host.name]
    assert old.state == HostState.UNREACHABLE and old.assigned_instance == ""
    assert await ctl.reconcile("h1") == DONE  # again: nothing more happens
    assert await ctl.resync_keys() == []


async def test_an_instance_with_local_disks_stays_and_says_why() -> None:

    host, inst = _world(disks=(Disk(name="nvme0", size_gib=100),))
    records, admin = _Records(host, inst), FakeCephAdmin()
    records.now = 5000.0
    assert await _failover(records, admin).reconcile("h1") == DONE
    kept = records.objs[inst.name]
    assert kept.state == InstanceState.RUNNING and kept.host == "hosts/h1"
    cond = find_condition(kept.conditions, ConditionType.MOVED)
    assert cond is not None and cond.status == ConditionStatus.FALSE
    assert cond.reason == "NotMovable" and "nvme0" in cond.message
    assert admin.calls == []
