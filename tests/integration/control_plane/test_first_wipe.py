"""A wipe before every tenant, through the API with real agents (fake power
driver, ``tools.region.agents``) and the real controllers: a newly
registered host passes CLEANING and is AVAILABLE only after its agent's
wipe report; maintenance during CLEANING, then lifted, starts a new
cleaning epoch that a report for the interrupted one does not complete;
a host is never decommissioned out of CLEANING."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from bmaas.v1 import agent_pb2, common_pb2, operator_pb2, tenant_pb2
from tools.region.agents import agent_config, running_agent
from tools.region.control_plane import Clients, InProcessControlPlane, bearer
from tools.region.etcd import EtcdServer
from tools.region.world import enroll, report_wiped, wait_host_state

S = common_pb2
#: how long a host is watched to stay CLEANING while no (valid) wipe report exists
QUIET = 1.0


@pytest_asyncio.fixture(loop_scope="session")
async def plane(etcd: EtcdServer) -> AsyncIterator[InProcessControlPlane]:
    async with InProcessControlPlane(etcd, controllers=True, allow_fake_power=True) as cp:
        yield cp


async def _host(c: Clients, name: str) -> common_pb2.Host:
    got: common_pb2.Host = await c.operator.GetHost(
        tenant_pb2.GetRequest(name=name), metadata=c.op_md
    )
    return got


async def _stays_cleaning(c: Clients, name: str, epoch: int) -> None:
    """The host stays CLEANING (at *epoch*) for ``QUIET`` seconds: the
    controllers run meanwhile and would have finished a cleaning by now."""
    deadline = time.monotonic() + QUIET
    while time.monotonic() < deadline:
        host = await _host(c, name)
        assert (host.state, host.cleaning_epoch) == (S.HOST_STATE_CLEANING, epoch)


async def _register(c: Clients, name: str, credential: str) -> common_pb2.Host:
    reg = await c.agent.Register(
        agent_pb2.RegisterRequest(host=name, power_driver="fake"), metadata=bearer(credential)
    )
    host: common_pb2.Host = reg.host
    return host


def _cleaned(host: common_pb2.Host) -> str:
    conds = [k for k in host.conditions if k.type == "Cleaned"]
    return f"{conds[0].status}:{conds[0].message}" if conds else ""


async def test_a_new_host_is_available_only_after_its_wipe_report(
    plane: InProcessControlPlane, tmp_path: Path
) -> None:
    async with plane.clients() as c:
        enrolled, cred = await enroll(c, host_id="new-1", register=False)
        assert enrolled.state == S.HOST_STATE_ENROLLED
        # the agent registers but has not wiped yet: CLEANING, epoch 1
        reg = await _register(c, enrolled.name, cred)
        assert (reg.state, reg.cleaning_epoch) == (S.HOST_STATE_CLEANING, 1)
        await _stays_cleaning(c, enrolled.name, 1)
        assert _cleaned(await _host(c, enrolled.name)) == ""
        # a real agent: it reads clean=True, wipes, reports epoch 1
        cfg = agent_config(port=plane.port, host_id="new-1", credential=cred, state_dir=tmp_path)
        async with running_agent(cfg):
            host = await wait_host_state(c, enrolled.name, S.HOST_STATE_AVAILABLE, timeout=20)
        assert _cleaned(host) == "True:epoch 1"
        assert host.cleaning_epoch == 1


async def test_maintenance_during_cleaning_needs_a_new_wipe(
    plane: InProcessControlPlane, tmp_path: Path
) -> None:
    async with plane.clients() as c:
        enrolled, cred = await enroll(c, host_id="maint-1", register=False)
        name = enrolled.name
        assert (await _register(c, name, cred)).state == S.HOST_STATE_CLEANING
        on = await c.operator.SetHostMaintenance(
            operator_pb2.SetHostMaintenanceRequest(name=name, maintenance=True, reason="fan"),
            metadata=c.op_md,
        )
        assert on.state == S.HOST_STATE_MAINTENANCE
        off = await c.operator.SetHostMaintenance(
            operator_pb2.SetHostMaintenanceRequest(name=name, maintenance=False),
            metadata=c.op_md,
        )
        assert (off.state, off.cleaning_epoch) == (S.HOST_STATE_CLEANING, 2)
        # a wipe report for the interrupted cleaning (epoch 1) does not end this one
        await report_wiped(c, name, cred, 1)
        await _stays_cleaning(c, name, 2)
        cfg = agent_config(port=plane.port, host_id="maint-1", credential=cred, state_dir=tmp_path)
        async with running_agent(cfg):
            host = await wait_host_state(c, name, S.HOST_STATE_AVAILABLE, timeout=20)
        assert _cleaned(host) == "True:epoch 2"


async def test_no_decommission_out_of_cleaning(plane: InProcessControlPlane) -> None:
    async with plane.clients() as c:
        enrolled, cred = await enroll(c, host_id="old-1", register=False)
        name = enrolled.name
        await _register(c, name, cred)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await c.operator.DecommissionHost(
                operator_pb2.HostActionRequest(name=name), metadata=c.op_md
            )
        assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await c.operator.SetHostMaintenance(
            operator_pb2.SetHostMaintenanceRequest(name=name, maintenance=True),
            metadata=c.op_md,
        )
        gone = await c.operator.DecommissionHost(
            operator_pb2.HostActionRequest(name=name), metadata=c.op_md
        )
        assert gone.state == S.HOST_STATE_DECOMMISSIONED
        # its agent can neither come back nor report a wipe that would free it
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await _register(c, name, cred)
        assert exc.value.code() in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
        )
        assert (await _host(c, name)).state == S.HOST_STATE_DECOMMISSIONED
