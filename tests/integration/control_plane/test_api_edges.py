"""The API's edges as a client that reads only the .proto files meets them:
filters in proto field names, IssueTenantToken retried with its request_id,
a quota set below current usage, and NOT_FOUND with google.rpc.ResourceInfo."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bmaas.v1 import common_pb2, operator_pb2, tenant_pb2
from tests.harness.etcd_dump import etcd_dump
from tools.region.control_plane import bearer
from tools.region.etcd import EtcdServer
from tools.region.world import World


def detail(err: grpc.aio.AioRpcError, cls: type) -> object | None:
    status = rpc_status.from_call(err)
    for any_ in status.details if status else ():
        msg = cls()
        if any_.Unpack(msg):
            return msg
    return None


# -- (b) filters speak the proto field names --------------------------------------------


async def test_filters_use_the_documented_proto_field_names(world: World) -> None:
    w, c = world, world.clients
    vol_a = await c.tenant.CreateVolume(
        tenant_pb2.CreateVolumeRequest(volume=common_pb2.Volume(size_gib=10)), metadata=w.md
    )
    vol_b = await c.tenant.CreateVolume(
        tenant_pb2.CreateVolumeRequest(volume=common_pb2.Volume(size_gib=10)), metadata=w.md
    )
    inst = await c.tenant.CreateInstance(
        tenant_pb2.CreateInstanceRequest(
            instance=common_pb2.Instance(instance_type=w.instance_type, image=w.image)
        ),
        metadata=w.md,
    )
    await c.tenant.AttachVolume(
        tenant_pb2.AttachVolumeRequest(name=vol_b.name, instance=inst.name), metadata=w.md
    )

    async def volumes(flt: str) -> list[str]:
        resp = await c.tenant.ListVolumes(tenant_pb2.ListRequest(filter=flt), metadata=w.md)
        return [v.name for v in resp.volumes]

    assert await volumes(f'instance="{inst.name}"') == [vol_b.name]
    assert await volumes("state=IN_USE") == [vol_b.name]
    assert await volumes("state=VOLUME_STATE_AVAILABLE") == [vol_a.name]
    assert await volumes(f"name={vol_a.name}") == [vol_a.name]

    hosts = await c.operator.ListHosts(
        tenant_pb2.ListRequest(filter=f"instance={inst.name}"), metadata=c.op_md
    )
    assert [h.name for h in hosts.hosts] == [inst.host]
    images = await c.operator.ListImages(
        tenant_pb2.ListRequest(filter='source_uri="file:///images/d12.raw"'), metadata=c.op_md
    )
    assert [i.name for i in images.images] == [w.image]
    # paging keeps the filter
    first = await c.operator.ListHosts(
        tenant_pb2.ListRequest(filter="state=AVAILABLE", page_size=1), metadata=c.op_md
    )
    second = await c.operator.ListHosts(
        tenant_pb2.ListRequest(
            filter="state=AVAILABLE", page_size=1, page_token=first.next_page_token
        ),
        metadata=c.op_md,
    )
    assert first.hosts[0].name != second.hosts[0].name
    assert {h.state for h in (*first.hosts, *second.hosts)} == {common_pb2.HOST_STATE_AVAILABLE}


@pytest.mark.parametrize(
    ("method", "flt", "needle"),
    [
        ("ListNetworkInterfaces", "ip_address=10.0.0.1", "ip_address"),
        ("ListVolumes", "attached_to=x", "attached_to"),
        ("ListInstances", "generation=1", "generation"),
        ("ListInstances", "volumes=x", "repeated"),
        ("ListInstances", "state=AVAILABLE", "AVAILABLE"),
    ],
)
async def test_fields_the_protos_do_not_have_are_refused(
    world: World, method: str, flt: str, needle: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await getattr(world.clients.tenant, method)(
            tenant_pb2.ListRequest(filter=flt), metadata=world.md
        )
    err = exc.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in (err.details() or "")
    bad = detail(err, error_details_pb2.BadRequest)
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert bad.field_violations[0].field == "filter"


# -- (c) IssueTenantToken honours request_id ---------------------------------------------


async def test_issue_tenant_token_retry_returns_the_same_token_without_its_secret(
    world: World, etcd: EtcdServer
) -> None:
    c = world.clients

    async def token_keys() -> set[bytes]:
        return {k for k in await etcd_dump(etcd) if b"/tenant_tokens/" in k}

    before = await token_keys()
    req = operator_pb2.IssueTenantTokenRequest(tenant=world.tenant, request_id="tok-1")
    first = await c.operator.IssueTenantToken(req, metadata=c.op_md)
    again = await c.operator.IssueTenantToken(req, metadata=c.op_md)
    assert first.token.startswith(f"bmt_{first.token_id}.") and not first.replayed
    assert again.token_id == first.token_id and again.replayed and again.token == ""
    assert again.create_time == first.create_time
    assert len(await token_keys()) == len(before) + 1
    # the one token works
    await c.tenant.ListVolumes(tenant_pb2.ListRequest(), metadata=bearer(first.token))
    other = await c.operator.IssueTenantToken(
        operator_pb2.IssueTenantTokenRequest(tenant=world.tenant, request_id="tok-2"),
        metadata=c.op_md,
    )
    assert other.token_id != first.token_id and other.token and not other.replayed
    assert len(await token_keys()) == len(before) + 2


# -- (d) a quota below current usage -----------------------------------------------------


async def test_quota_below_usage_keeps_resources_and_refuses_growth(world: World) -> None:
    w, c = world, world.clients
    vols = [
        await c.tenant.CreateVolume(
            tenant_pb2.CreateVolumeRequest(volume=common_pb2.Volume(size_gib=10)), metadata=w.md
        )
        for _ in range(2)
    ]
    inst = await c.tenant.CreateInstance(
        tenant_pb2.CreateInstanceRequest(
            instance=common_pb2.Instance(instance_type=w.instance_type, image=w.image)
        ),
        metadata=w.md,
    )
    tenant = await c.operator.SetTenantQuota(
        operator_pb2.SetTenantQuotaRequest(
            tenant=w.tenant, quota=common_pb2.Quota(max_instances=1, max_volume_gib=15)
        ),
        metadata=c.op_md,
    )
    assert tenant.quota.max_volume_gib == 15 and tenant.usage.volume_gib == 20
    assert tenant.quota.max_instances == 1 and tenant.usage.instances == 1
    # nothing that exists is touched
    got = await c.tenant.GetInstance(tenant_pb2.GetRequest(name=inst.name), metadata=w.md)
    assert got.state == inst.state and got.host == inst.host
    for v in vols:
        got_v = await c.tenant.GetVolume(tenant_pb2.GetRequest(name=v.name), metadata=w.md)
        assert got_v.etag == v.etag

    async def refused(call: object) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call  # type: ignore[misc]
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert detail(exc.value, error_details_pb2.QuotaFailure) is not None

    await refused(
        c.tenant.CreateVolume(
            tenant_pb2.CreateVolumeRequest(volume=common_pb2.Volume(size_gib=1)), metadata=w.md
        )
    )
    await refused(
        c.tenant.ResizeVolume(
            tenant_pb2.ResizeVolumeRequest(name=vols[0].name, size_gib=11), metadata=w.md
        )
    )
    await refused(
        c.tenant.CreateInstance(
            tenant_pb2.CreateInstanceRequest(
                instance=common_pb2.Instance(instance_type=w.instance_type, image=w.image)
            ),
            metadata=w.md,
        )
    )
    # usage drops below the quota again: creates fit again
    await c.tenant.DeleteVolume(tenant_pb2.DeleteRequest(name=vols[1].name), metadata=w.md)
    await c.tenant.CreateVolume(
        tenant_pb2.CreateVolumeRequest(volume=common_pb2.Volume(size_gib=5)), metadata=w.md
    )
    await refused(
        c.tenant.CreateVolume(
            tenant_pb2.CreateVolumeRequest(volume=common_pb2.Volume(size_gib=1)), metadata=w.md
        )
    )


# -- (e) NOT_FOUND names the resource ----------------------------------------------------


@pytest.mark.parametrize("who", ["own", "other"])
async def test_not_found_carries_resource_info(world: World, who: str) -> None:
    c = world.clients
    name = f"{world.tenant}/volumes/nope" if who == "own" else "tenants/someone/volumes/v-1"
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await c.tenant.GetVolume(tenant_pb2.GetRequest(name=name), metadata=world.md)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    info = detail(exc.value, error_details_pb2.ResourceInfo)
    assert isinstance(info, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("bmaas.v1.Volume", name)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await c.tenant.CreateInstance(
            tenant_pb2.CreateInstanceRequest(
                instance=common_pb2.Instance(instance_type="instanceTypes/nope", image=world.image)
            ),
            metadata=world.md,
        )
    info = detail(exc.value, error_details_pb2.ResourceInfo)
    assert isinstance(info, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == (
        "bmaas.v1.InstanceType",
        "instanceTypes/nope",
    )
