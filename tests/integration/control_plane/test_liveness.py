"""Liveness on real etcd leases: a host whose heartbeat lease expires becomes
UNREACHABLE and its instance Impaired; resumed heartbeats bring both back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from control_plane.controllers import ControllerConfig, ControllerManager
from control_plane.domain import AgentReport, Host, HostState, Instance, InstanceState
from control_plane.domain.conditions import ConditionStatus, ConditionType, condition_is
from control_plane.store import Store
from tests.harness.store import (
    cp_etcd,
    eventually,
    root,
    seed_catalog,
    seed_hosts,
    store,
    store_factory,
)

__all__ = ["cp_etcd", "root", "store", "store_factory"]
pytestmark = pytest.mark.asyncio(loop_scope="session")

HB_TTL = 2
CONFIG = ControllerConfig(lease_ttl=2, resync_period=1.0, pending_grace=0.0)
T, F = ConditionStatus.TRUE, ConditionStatus.FALSE


@pytest_asyncio.fixture(loop_scope="session")
async def manager(store: Store) -> AsyncIterator[ControllerManager]:
    await seed_catalog(store)
    async with ControllerManager(store, identity="solo", config=CONFIG) as mgr:
        await mgr.wait_running()
        yield mgr


async def _host(store: Store, host_id: str) -> Host:
    return await store.get(Host, f"hosts/{host_id}")


async def test_silent_allocated_host_goes_unreachable_and_comes_back(
    store: Store, manager: ControllerManager
) -> None:
    (host,) = await seed_hosts(store, 1)
    await store.liveness.heartbeat(host.id, ttl=HB_TTL)

    async def monitored() -> bool:
        h = await _host(store, host.id)
        return h.monitored and condition_is(h.conditions, ConditionType.HOST_REACHABLE, T)

    await eventually(monitored)
    inst = await store.create(
        Instance(tenant="t1", id="i1", instance_type="instanceTypes/m1", image="images/d")
    )

    async def placed() -> bool:
        i = await store.get(Instance, inst.name)
        return i.state == InstanceState.SCHEDULED

    await eventually(placed)

    store.liveness.forget(host.id)  # the agent goes silent; etcd expires the lease

    async def unreachable() -> bool:
        return (await _host(store, host.id)).state == HostState.UNREACHABLE

    took = await eventually(unreachable, timeout=HB_TTL + 5)
    assert took <= HB_TTL + 2
    h = await _host(store, host.id)
    assert condition_is(h.conditions, ConditionType.HOST_REACHABLE, F)
    assert h.assigned_instance == inst.name  # the binding survives
    i = await store.get(Instance, inst.name)
    assert condition_is(i.conditions, ConditionType.IMPAIRED, T)
    assert condition_is(i.conditions, ConditionType.HOST_REACHABLE, F)

    await store.liveness.heartbeat(host.id, ttl=HB_TTL)  # back

    async def recovered() -> bool:
        return (await _host(store, host.id)).state == HostState.ALLOCATED

    await eventually(recovered)
    i = await store.get(Instance, inst.name)
    assert condition_is(i.conditions, ConditionType.IMPAIRED, F)
    assert condition_is(i.conditions, ConditionType.HOST_REACHABLE, T)


async def test_free_host_that_was_silent_is_wiped_before_reuse(
    store: Store, manager: ControllerManager
) -> None:
    (host,) = await seed_hosts(store, 1)
    await store.liveness.heartbeat(host.id, ttl=HB_TTL)

    async def monitored() -> bool:
        return (await _host(store, host.id)).monitored

    await eventually(monitored)
    await store.liveness.expire(host.id)  # fence the host at once

    async def unreachable() -> bool:
        return (await _host(store, host.id)).state == HostState.UNREACHABLE

    await eventually(unreachable)
    # the scheduler must not hand out an unreachable host
    assert manager.cache is not None
    assert manager.cache.free_count() == 0

    await store.liveness.heartbeat(host.id, ttl=HB_TTL)

    async def cleaning() -> bool:
        return (await _host(store, host.id)).state == HostState.CLEANING

    await eventually(cleaning)
    h = await _host(store, host.id)
    assert h.cleaning_epoch == 1
    # a real agent must report the wipe; keep heartbeating while it "wipes"
    await store.liveness.heartbeat(host.id, ttl=HB_TTL)
    await store.reports.put(AgentReport(host=host.id, wiped_epoch=1))

    async def available() -> bool:
        return (await _host(store, host.id)).state == HostState.AVAILABLE

    await eventually(available)


async def test_agentless_hosts_are_not_monitored(store: Store, manager: ControllerManager) -> None:
    (host,) = await seed_hosts(store, 1)
    await manager.controllers[2].queue.join()
    for ctl in manager.controllers:
        for key in await ctl.resync_keys():
            assert key != host.id or ctl.name != "liveness"
    h = await _host(store, host.id)
    assert h.state == HostState.AVAILABLE and not h.monitored
