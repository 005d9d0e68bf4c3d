"""An instance's ``metadata_tokens`` from CreateInstance to the agent: the
tenant API's field (default REQUIRED), the DesiredInstance on the real
Connect stream, and the agent's conversion of it (what the NIC step hands
offload-net as ``--metadata-tokens``, tests/unit/host_agent/test_nics.py)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from bmaas.v1 import agent_pb2, common_pb2, operator_pb2, tenant_pb2
from host_agent.client import desired_from_pb
from tools.region.control_plane import bearer
from tools.region.world import World


async def next_desired(call: grpc.aio.StreamStreamCall) -> agent_pb2.DesiredState:
    msg = await asyncio.wait_for(call.read(), 5.0)
    assert msg is not grpc.aio.EOF and msg.WhichOneof("body") == "desired_state"
    desired: agent_pb2.DesiredState = msg.desired_state
    return desired


async def create(w: World, mode: common_pb2.MetadataTokens.ValueType) -> common_pb2.Instance:
    return await w.clients.tenant.CreateInstance(
        tenant_pb2.CreateInstanceRequest(
            instance=common_pb2.Instance(
                instance_type=w.instance_type, image=w.image, metadata_tokens=mode
            )
        ),
        metadata=w.md,
    )


async def test_metadata_tokens_reach_the_agent(world: World) -> None:
    w, c = world, world.clients
    hosts = list(w.hosts.items())
    (host_a, cred_a), (host_b, cred_b) = hosts[0], hosts[1]
    for other, _ in hosts[2:]:
        await c.operator.CordonHost(operator_pb2.HostActionRequest(name=other), metadata=c.op_md)
    try:
        default = await create(w, common_pb2.METADATA_TOKENS_UNSPECIFIED)
        optional = await create(w, common_pb2.METADATA_TOKENS_OPTIONAL)
        assert default.metadata_tokens == common_pb2.METADATA_TOKENS_REQUIRED
        assert optional.metadata_tokens == common_pb2.METADATA_TOKENS_OPTIONAL
        got = await c.tenant.GetInstance(tenant_pb2.GetRequest(name=optional.name), metadata=w.md)
        assert got.metadata_tokens == common_pb2.METADATA_TOKENS_OPTIONAL
        want = {default.name: "required", optional.name: "optional"}
        seen: dict[str, str] = {}
        for host, cred in ((host_a, cred_a), (host_b, cred_b)):
            call = c.agent.Connect(metadata=bearer(cred))
            try:
                desired = await next_desired(call)
                assert desired.host == host
                (di,) = desired.instances
                assert di.metadata_tokens != common_pb2.METADATA_TOKENS_UNSPECIFIED
                (inst,) = desired_from_pb(desired).instances
                seen[inst.name] = inst.metadata_tokens
            finally:
                call.cancel()
        assert seen == want
    finally:
        for other, _ in hosts[2:]:
            await c.operator.UncordonHost(
                operator_pb2.HostActionRequest(name=other), metadata=c.op_md
            )


async def test_an_unknown_metadata_tokens_value_is_refused(world: World) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await create(world, 7)  # type: ignore[arg-type]
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "instance.metadata_tokens" in (exc.value.details() or "")
