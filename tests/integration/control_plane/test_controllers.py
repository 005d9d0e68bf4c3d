"""Controllers end to end on a real etcd: PENDING -> RUNNING -> TERMINATED with
the host released through CLEANING.

Observed state comes only from agents.  Tests that need it run an
``ApiServer`` on the test's store (its own key root) and a real ``Agent``
(fake power driver) per host, speaking ``AgentService``; a few write
``AgentReport`` records themselves to pin down how controllers read them;
tests about placement alone stop at SCHEDULED and need no agent."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from control_plane.api import auth
from control_plane.api.server import ApiConfig, ApiServer
from control_plane.controllers import ControllerConfig, ControllerManager
from control_plane.domain import (
    AgentPhase,
    AgentReport,
    Host,
    HostState,
    Image,
    Instance,
    InstanceEvent,
    InstanceState,
    NetworkInterface,
    Volume,
)
from control_plane.domain.conditions import ConditionStatus, ConditionType, condition_is
from control_plane.domain.transitions import apply_instance_event
from control_plane.scheduler import HostCache, Scheduler
from control_plane.store import Store
from host_agent.agent import Agent
from tests.harness.store import (
    cp_etcd,
    eventually,
    root,
    seed_catalog,
    seed_hosts,
    store,
    store_factory,
)
from tools.region.agents import agent_config, running_agent
from tools.region.pki import default_pki

__all__ = ["cp_etcd", "root", "store", "store_factory"]
pytestmark = pytest.mark.asyncio(loop_scope="session")

CONFIG = ControllerConfig(
    lease_ttl=2,
    resync_period=1.0,
    no_capacity_retry=0.2,
    pending_grace=0.0,
)
NAME = "tenants/t1/instances/i1"


@pytest_asyncio.fixture(loop_scope="session")
async def manager(store: Store) -> AsyncIterator[ControllerManager]:
    await seed_catalog(store)
    async with ControllerManager(store, identity="solo", config=CONFIG) as mgr:
        yield mgr


@pytest_asyncio.fixture(loop_scope="session")
async def api(store: Store) -> AsyncIterator[ApiServer]:
    """The API (AgentService) on the test's store, for real agents to talk to."""
    await store.create(Image(id="d", source="file:///images/d.raw"))
    server = ApiServer(
        store,
        ApiConfig(
            listen="127.0.0.1:0",
            heartbeat_interval=1,
            heartbeat_ttl=3,
            auth_cache_ttl=0.5,
            desired_resync=2.0,
            tls=default_pki().server_tls(),
        ),
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0.5)


@contextlib.asynccontextmanager
async def _agent(store: Store, api: ApiServer, host: Host, state_dir: Path) -> AsyncIterator[Agent]:
    """A real agent for *host* (a credential is issued for it first, as
    ``EnrollHost`` does)."""
    secret = secrets.token_hex(16)
    await store.mutate(
        Host, host.name, lambda h: dataclasses.replace(h, agent_credential_hash=auth.digest(secret))
    )
    config = agent_config(
        port=api.port,
        host_id=host.id,
        credential=auth.agent_credential(host.id, secret),
        state_dir=state_dir,
    )
    async with running_agent(config) as agent:
        await asyncio.wait_for(agent.link.connected.wait(), 10)
        yield agent


def _explain(store: Store, agent: Agent) -> Callable[[], Awaitable[str]]:
    async def explain() -> str:
        inst = await store.get(Instance, NAME)
        host = await store.get(Host, inst.host) if inst.host else None
        report = await store.reports.get(host.id) if host is not None else None
        return (
            f"instance {inst.state} gen={inst.generation} host={inst.host!r} "
            f"conditions={inst.conditions}; host {host}; report {report}; "
            f"agent connected={agent.link.connected.is_set()} "
            f"applied={agent.reconciler.applied_generation} state={agent.reconciler.state}"
        )

    return explain


async def _state(store: Store, name: str = NAME) -> InstanceState:
    return (await store.get(Instance, name)).state


async def _create(store: Store) -> Instance:
    return await store.create(
        Instance(tenant="t1", id="i1", instance_type="instanceTypes/m1", image="images/d")
    )


async def _event(store: Store, event: InstanceEvent, name: str = NAME) -> Instance:
    return await store.mutate(Instance, name, lambda i: apply_instance_event(i, event))


async def test_host_lifecycle_and_host_recycling_through_an_agent(
    store: Store, manager: ControllerManager, api: ApiServer, tmp_path: Path
) -> None:
    (host,) = await seed_hosts(store, 1)
    async with _agent(store, api, host, tmp_path / "agent") as agent:
        await manager.wait_running()
        await _create(store)

        async def running() -> bool:
            return await _state(store) == InstanceState.RUNNING

        await eventually(running, explain=_explain(store, agent))
        inst = await store.get(Instance, NAME)
        assert inst.host == host.name
        assert condition_is(inst.conditions, ConditionType.SCHEDULED, ConditionStatus.TRUE)
        assert (await store.get_usage("t1")).instances == 1
        assert await agent.reconciler._drivers[NAME].state() == "on"

        await _event(store, InstanceEvent.TERMINATE)

        async def terminated() -> bool:
            return await _state(store) == InstanceState.TERMINATED

        await eventually(terminated)
        assert (await store.get_usage("t1")).instances == 0
        released = await store.get(Host, host.name)
        assert released.state in (HostState.CLEANING, HostState.AVAILABLE)
        assert released.assigned_instance == ""

        async def recycled() -> bool:
            h = await store.get(Host, host.name)
            return h.state == HostState.AVAILABLE

        await eventually(recycled)
        h = await store.get(Host, host.name)
        assert h.cleaning_epoch == 1 and h.last_cleaned_time > 0
        assert condition_is(h.conditions, ConditionType.CLEANED, ConditionStatus.TRUE)
        assert agent.reconciler.state.wiped_epoch == 1  # the agent's wipe ended the cleaning
        assert NAME not in agent.reconciler.state.instances


async def test_agent_reports_drive_the_instance_and_the_wipe(
    store: Store, manager: ControllerManager
) -> None:
    (host,) = await seed_hosts(store, 1)
    # The agent heartbeats before the host is marked as having one: the other
    # order lets the liveness controller see a monitored host without a lease
    # (UNREACHABLE; on the first heartbeat it goes to CLEANING for a re-wipe,
    # which only an agent report finishes), and nothing is ever scheduled.
    await store.liveness.heartbeat(host.id, ttl=10)
    host = await store.update(dataclasses.replace(host, last_heartbeat=1.0))  # has an agent
    await manager.wait_running()
    await _create(store)

    async def scheduled() -> bool:
        return await _state(store) == InstanceState.SCHEDULED

    async def explain() -> str:
        inst = await store.get(Instance, NAME)
        cached = manager.cache.get(host.id) if manager.cache is not None else None
        return (
            f"instance {inst.state} host={inst.host!r} conditions={inst.conditions}; "
            f"leader={manager.is_leader}; cached host={cached}"
        )

    await eventually(scheduled, explain=explain)

    async def reach(state: InstanceState) -> None:
        async def probe() -> bool:
            return await _state(store) == state

        await eventually(probe)

    report = AgentReport(host=host.id, instance=NAME, instance_phase=AgentPhase.PROVISIONING)
    await store.reports.put(report)
    await reach(InstanceState.PROVISIONING)
    await store.reports.put(dataclasses.replace(report, instance_phase=AgentPhase.RUNNING))
    await reach(InstanceState.RUNNING)

    stopping = await _event(store, InstanceEvent.STOP)
    assert stopping.generation == 1
    # a STOPPED report from before the stop (generation 0) is ignored...
    await store.reports.put(dataclasses.replace(report, instance_phase=AgentPhase.STOPPED))
    await store.reports.put(
        dataclasses.replace(report, instance_phase=AgentPhase.STOPPED, generation=1)
    )
    await reach(InstanceState.STOPPED)

    await _event(store, InstanceEvent.TERMINATE)
    await reach(InstanceState.TERMINATED)
    cleaning = await store.get(Host, host.name)
    assert cleaning.state == HostState.CLEANING  # waits for the agent's wipe
    await store.reports.put(AgentReport(host=host.id, wiped_epoch=cleaning.cleaning_epoch))

    async def available() -> bool:
        return (await store.get(Host, host.name)).state == HostState.AVAILABLE

    await eventually(available)


async def test_failed_report_fails_the_instance_and_no_capacity_is_reported(
    store: Store, manager: ControllerManager
) -> None:
    await manager.wait_running()
    await _create(store)

    async def no_capacity() -> bool:
        inst = await store.get(Instance, NAME)
        return condition_is(inst.conditions, ConditionType.SCHEDULED, ConditionStatus.FALSE)

    await eventually(no_capacity)
    assert await _state(store) == InstanceState.PENDING
    (host,) = await seed_hosts(store, 1)
    await store.liveness.heartbeat(host.id, ttl=10)  # an agent is connected
    await store.update(dataclasses.replace(host, last_heartbeat=1.0))

    async def scheduled() -> bool:
        return await _state(store) == InstanceState.SCHEDULED

    await eventually(scheduled)
    await store.reports.put(
        AgentReport(
            host=host.id,
            instance=NAME,
            instance_phase=AgentPhase.FAILED,
            message="image checksum mismatch",
        )
    )

    async def failed() -> bool:
        return await _state(store) == InstanceState.FAILED

    await eventually(failed)
    assert (await store.get(Instance, NAME)).failure_reason == "image checksum mismatch"


async def test_young_pending_instances_are_left_to_their_api_replica(store: Store) -> None:
    await seed_catalog(store)
    await seed_hosts(store, 1)
    config = dataclasses.replace(CONFIG, pending_grace=1.0)
    async with ControllerManager(store, identity="graceful", config=config) as mgr:
        await mgr.wait_running()
        await _create(store)
        await asyncio.sleep(0.4)
        assert await _state(store) == InstanceState.PENDING  # the API would place it now

        async def picked_up() -> bool:
            return await _state(store) != InstanceState.PENDING

        took = await eventually(picked_up)
        assert took >= 0.3


async def test_manager_can_share_the_api_replicas_scheduler(store: Store) -> None:
    await seed_catalog(store)
    await seed_hosts(store, 1)
    async with HostCache(store) as cache:
        shared = Scheduler(store, cache)
        async with ControllerManager(store, config=CONFIG, scheduler=shared) as mgr:
            await mgr.wait_running()
            assert mgr.scheduler is shared
            await _create(store)
            await eventually(_placed(store))
        assert cache.ready.is_set() and len(cache) == 1  # still the caller's, still open


def _placed(store: Store) -> Callable[[], Awaitable[bool]]:
    """The manager's scheduler bound the instance to the (only) host: placement
    is all these tests are about, so no agent is needed to go further."""

    async def probe() -> bool:
        inst = await store.get(Instance, NAME)
        if inst.state != InstanceState.SCHEDULED or not inst.host:
            return False
        return (await store.get(Host, inst.host)).assigned_instance == NAME

    return probe


async def test_resync_recycles_a_host_left_allocated_to_a_finished_instance(
    store: Store, manager: ControllerManager, api: ApiServer, tmp_path: Path
) -> None:
    (host,) = await seed_hosts(store, 1, state=HostState.ENROLLED)
    inst = await store.create(
        Instance(
            tenant="t1",
            id="done",
            instance_type="instanceTypes/m1",
            image="images/d",
            state=InstanceState.TERMINATED,
        )
    )
    # a buggy writer binds the host to the already finished instance
    await store.update(
        dataclasses.replace(host, state=HostState.ALLOCATED, assigned_instance=inst.name)
    )

    async def released() -> bool:
        h = await store.get(Host, host.name)
        return h.state == HostState.CLEANING and not h.assigned_instance

    await eventually(released, timeout=CONFIG.resync_period + 5)
    epoch = (await store.get(Host, host.name)).cleaning_epoch
    # the resync released it for cleaning; only its agent's wipe hands it out again
    async with _agent(store, api, host, tmp_path / "agent") as agent:

        async def recycled() -> bool:
            h = await store.get(Host, host.name)
            return h.state == HostState.AVAILABLE and not h.assigned_instance

        await eventually(recycled)
        assert agent.reconciler.state.wiped_epoch == epoch


async def test_manager_can_share_a_host_cache_across_terms(store: Store) -> None:
    await seed_catalog(store)
    await seed_hosts(store, 1)
    async with HostCache(store) as cache:
        async with ControllerManager(store, config=CONFIG, cache=cache) as mgr:
            await mgr.wait_running()
            assert mgr.cache is cache and mgr.scheduler is not None
            assert mgr.scheduler.cache is cache
            await _create(store)
            await eventually(_placed(store))
        assert cache.ready.is_set() and len(cache) == 1
    with pytest.raises(ValueError):
        ControllerManager(store, scheduler=Scheduler(store, HostCache(store)), cache=cache)


async def test_termination_detaches_volumes_and_network_interfaces(
    store: Store, manager: ControllerManager, api: ApiServer, tmp_path: Path
) -> None:
    (host,) = await seed_hosts(store, 1)
    async with _agent(store, api, host, tmp_path / "agent"):
        await manager.wait_running()
        subnet = "tenants/t1/vpcs/v1/subnets/s1"
        vol = await store.create(Volume(tenant="t1", id="v1", size_gib=10))
        nic = await store.create(
            NetworkInterface(tenant="t1", id="n1", subnet=subnet, ip_address="10.0.0.4")
        )
        await store.update_many(
            [dataclasses.replace(vol, attached_to=NAME), dataclasses.replace(nic, instance=NAME)]
        )
        await store.create(
            Instance(
                tenant="t1",
                id="i1",
                instance_type="instanceTypes/m1",
                image="images/d",
                subnet=subnet,
                volumes=(vol.name,),
                network_interfaces=(nic.name,),
            )
        )

        async def running() -> bool:
            return await _state(store) == InstanceState.RUNNING

        await eventually(running)
        await _event(store, InstanceEvent.TERMINATE)

        async def released() -> bool:
            i = await store.get(Instance, NAME)
            v = await store.get(Volume, vol.name)
            n = await store.get(NetworkInterface, nic.name)
            return (
                i.state == InstanceState.TERMINATED
                and i.volumes == ()
                and i.network_interfaces == ()
                and v.attached_to == ""
                and n.instance == ""
            )

        await eventually(released)
        # released: the tenant can delete them now
        await store.delete(Volume, vol.name)
        await store.delete(NetworkInterface, nic.name)


async def test_terminated_instances_left_holding_attachments_are_released(
    store: Store, manager: ControllerManager
) -> None:
    """Level-triggered: a TERMINATED instance still listing a volume (e.g.
    terminated by an older replica) gets it detached; a volume re-attached
    elsewhere meanwhile is left alone."""
    await manager.wait_running()
    old = "tenants/t1/instances/old"
    mine = await store.create(Volume(tenant="t1", id="mine", size_gib=1, attached_to=old))
    moved = await store.create(
        Volume(tenant="t1", id="moved", size_gib=1, attached_to="tenants/t1/instances/other")
    )
    done = await store.create(
        Instance(
            tenant="t1",
            id="old",
            instance_type="instanceTypes/m1",
            image="images/d",
            state=InstanceState.TERMINATED,
            volumes=(mine.name, moved.name, "tenants/t1/volumes/gone"),
        )
    )
    assert done.name == old

    async def released() -> bool:
        i = await store.get(Instance, done.name)
        return i.volumes == () and (await store.get(Volume, mine.name)).attached_to == ""

    await eventually(released, timeout=CONFIG.resync_period + 5)
    assert (await store.get(Volume, moved.name)).attached_to == "tenants/t1/instances/other"
