"""OperatorService contract tests through the generated client, against a
real etcd: every RPC, paging, filters, idempotent retries, etag conflicts."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bmaas.v1 import agent_pb2, common_pb2, operator_pb2, tenant_pb2
from tools.region.control_plane import Clients, bearer
from tools.region.world import build_world, enroll, make_tenant

HostState = common_pb2.HostState


def error_reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    assert status is not None, "rich status details missing"
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    raise AssertionError("no ErrorInfo in status details")


async def test_enroll_returns_credential_once_and_register_starts_the_first_wipe(
    clients: Clients,
) -> None:
    c = clients
    host, cred = await enroll(c, host_id="h-a", register=False)
    assert host.name == "hosts/h-a" and host.state == HostState.HOST_STATE_ENROLLED
    assert cred.startswith("h-a.") and len(cred) > 40
    got = await c.operator.GetHost(tenant_pb2.GetRequest(name="hosts/h-a"), metadata=c.op_md)
    assert "agent_credential" not in str(got) and cred.split(".")[1] not in str(got)
    assert got.hardware.cpus == 64 and got.hardware.disks[0].size_gib == 1920
    reg = await c.agent.Register(agent_pb2.RegisterRequest(host="hosts/h-a"), metadata=bearer(cred))
    # wiped before its first tenant: AVAILABLE comes with the agent's wipe report
    assert reg.host.state == HostState.HOST_STATE_CLEANING and reg.host.cleaning_epoch == 1
    assert reg.heartbeat_interval_seconds > 0


async def test_enroll_retry_with_request_id_is_idempotent_and_rotates_credential(
    clients: Clients,
) -> None:
    c = clients
    req = operator_pb2.EnrollHostRequest(
        request_id="enroll-1",
        host=common_pb2.Host(
            zone="z1",
            rack="r1",
            host_class="c64",
            power_driver="fake",
            hardware=common_pb2.HardwareProfile(cpus=8, memory_gib=32),
        ),
    )
    first = await c.operator.EnrollHost(req, metadata=c.op_md)
    second = await c.operator.EnrollHost(req, metadata=c.op_md)
    assert first.host.name == second.host.name
    hosts = await c.operator.ListHosts(tenant_pb2.ListRequest(), metadata=c.op_md)
    assert [h.name for h in hosts.hosts] == [first.host.name]
    # Only the latest credential works.
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await c.agent.Register(
            agent_pb2.RegisterRequest(host=first.host.name),
            metadata=bearer(first.agent_credential),
        )
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    ok = await c.agent.Register(
        agent_pb2.RegisterRequest(host=first.host.name), metadata=bearer(second.agent_credential)
    )
    assert ok.host.name == first.host.name
    # Once an agent has registered, a retry leaves its credential alone.
    third = await c.operator.EnrollHost(req, metadata=c.op_md)
    assert third.host.name == first.host.name and third.agent_credential == ""
    again = await c.agent.Register(
        agent_pb2.RegisterRequest(host=first.host.name), metadata=bearer(second.agent_credential)
    )
    assert again.host.name == first.host.name
    # Same request id, different spec: refused.
    req.host.rack = "r2"
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await c.operator.EnrollHost(req, metadata=c.op_md)
    assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_list_hosts_pages_and_filters(clients: Clients) -> None:
    c = clients
    for i in range(7):
        await enroll(c, host_id=f"h{i}", zone="z1" if i < 4 else "z2", register=i % 2 == 0)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        resp = await c.operator.ListHosts(
            tenant_pb2.ListRequest(page_size=3, page_token=token), metadata=c.op_md
        )
        seen += [h.name for h in resp.hosts]
        pages += 1
        token = resp.next_page_token
        if not token:
            break
    assert pages == 3 and sorted(seen) == [f"hosts/h{i}" for i in range(7)]
    z2 = await c.operator.ListHosts(tenant_pb2.ListRequest(filter="zone=z2"), metadata=c.op_md)
    assert sorted(h.name for h in z2.hosts) == ["hosts/h4", "hosts/h5", "hosts/h6"]
    avail = await c.operator.ListHosts(
        tenant_pb2.ListRequest(filter="state=AVAILABLE AND zone=z1"), metadata=c.op_md
    )
    assert sorted(h.name for h in avail.hosts) == ["hosts/h0", "hosts/h2"]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await c.operator.ListHosts(
            tenant_pb2.ListRequest(filter="agent_credential_hash=x"), metadata=c.op_md
        )
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_cordon_uncordon_drain_with_etags(clients: Clients) -> None:
    c = clients
    world = await build_world(c, hosts=1)
    host = await c.operator.GetHost(tenant_pb2.GetRequest(name="hosts/h0"), metadata=c.op_md)
    cordoned = await c.operator.CordonHost(
        operator_pb2.HostActionRequest(name=host.name, etag=host.etag), metadata=c.op_md
    )
    assert cordoned.cordoned and cordoned.etag != host.etag
    # Stale etag -> ABORTED, nothing changes.
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await c.operator.UncordonHost(
            operator_pb2.HostActionRequest(name=host.name, etag=host.etag), metadata=c.op_md
        )
    assert exc.value.code() == grpc.StatusCode.ABORTED
    assert error_reason(exc.value) == "ETAG_MISMATCH"
    uncordoned = await c.operator.UncordonHost(
        operator_pb2.HostActionRequest(name=host.name, etag=cordoned.etag), metadata=c.op_md
    )
    assert not uncordoned.cordoned
    inst = await c.tenant.CreateInstance(
        tenant_pb2.CreateInstanceRequest(
            instance=common_pb2.Instance(instance_type=world.instance_type, image=world.image)
        ),
        metadata=world.md,
    )
    assert inst.host == host.name
    drained = await c.operator.DrainHost(
        operator_pb2.HostActionRequest(name=host.name, reason="disk swap"), metadata=c.op_md
    )
    assert drained.cordoned
    after = await c.tenant.GetInstance(tenant_pb2.GetRequest(name=inst.name), metadata=world.md)
    assert after.state in (
        common_pb2.INSTANCE_STATE_TERMINATING,
        common_pb2.INSTANCE_STATE_TERMINATED,
    )


async def test_maintenance_and_decommission(clients: Clients) -> None:
    c = clients
    await enroll(c, host_id="h-m")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await c.operator.DecommissionHost(
            operator_pb2.HostActionRequest(name="hosts/h-m"), metadata=c.op_md
        )
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "maintenance" in (exc.value.details() or "")
    on = await c.operator.SetHostMaintenance(
        operator_pb2.SetHostMaintenanceRequest(name="hosts/h-m", maintenance=True, reason="fw"),
        metadata=c.op_md,
    )
    assert on.state == HostState.HOST_STATE_MAINTENANCE and on.maintenance
    off = await c.operator.SetHostMaintenance(
        operator_pb2.SetHostMaintenanceRequest(name="hosts/h-m", maintenance=False),
        metadata=c.op_md,
    )
    assert off.state == HostState.HOST_STATE_CLEANING and not off.maintenance
    await c.operator.SetHostMaintenance(
        operator_pb2.SetHostMaintenanceRequest(name="hosts/h-m", maintenance=True),
        metadata=c.op_md,
    )
    gone = await c.operator.DecommissionHost(
        operator_pb2.HostActionRequest(name="hosts/h-m"), metadata=c.op_md
    )
    assert gone.state == HostState.HOST_STATE_DECOMMISSIONED
    missing = "hosts/nope"
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await c.operator.CordonHost(operator_pb2.HostActionRequest(name=missing), metadata=c.op_md)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


async def test_catalogue_instance_types_and_images(clients: Clients) -> None:
    c = clients
    for i in range(3):
        req = operator_pb2.CreateInstanceTypeRequest(
            request_id=f"t{i}",
            instance_type=common_pb2.InstanceType(
                name=f"instanceTypes/bm-t{i}", host_class=f"c{i}", cpus=8 * (i + 1), memory_gib=64
            ),
        )
        first = await c.operator.CreateInstanceType(req, metadata=c.op_md)
        again = await c.operator.CreateInstanceType(req, metadata=c.op_md)
        assert first.name == again.name and first.etag == again.etag
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await c.operator.CreateInstanceType(
            operator_pb2.CreateInstanceTypeRequest(
                instance_type=common_pb2.InstanceType(
                    name="instanceTypes/bm-t0", host_class="c9", cpus=1, memory_gib=1
                )
            ),
            metadata=c.op_md,
        )
    assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
    page = await c.operator.ListInstanceTypes(tenant_pb2.ListRequest(page_size=2), metadata=c.op_md)
    assert len(page.instance_types) == 2 and page.next_page_token
    only = await c.operator.ListInstanceTypes(
        tenant_pb2.ListRequest(filter="host_class=c2"), metadata=c.op_md
    )
    assert [t.name for t in only.instance_types] == ["instanceTypes/bm-t2"]
    img = await c.operator.RegisterImage(
        operator_pb2.RegisterImageRequest(
            request_id="img-1",
            image=common_pb2.Image(
                name="images/debian-12",
                os="debian-12",
                source_uri="file:///srv/d12.raw",
                size_gib=8,
                checksum="sha256:" + "a" * 64,
            ),
        ),
        metadata=c.op_md,
    )
    assert img.size_gib == 8 and img.create_time.seconds > 0
    images = await c.operator.ListImages(tenant_pb2.ListRequest(), metadata=c.op_md)
    assert [i.name for i in images.images] == ["images/debian-12"]


async def test_tenants_tokens_and_quota(clients: Clients) -> None:
    c = clients
    name, token = await make_tenant(c, "globex", max_instances=2)
    assert token.startswith("bmt_")
    t = await c.operator.GetTenant(tenant_pb2.GetRequest(name=name), metadata=c.op_md)
    assert t.quota.max_instances == 2 and t.usage.instances == 0
    # The token works for TenantService, not for OperatorService.
    await c.tenant.ListInstances(tenant_pb2.ListRequest(), metadata=bearer(token))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await c.operator.ListTenants(tenant_pb2.ListRequest(), metadata=bearer(token))
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    second = await c.operator.IssueTenantToken(
        operator_pb2.IssueTenantTokenRequest(tenant=name), metadata=c.op_md
    )
    assert second.token != token
    await c.tenant.ListInstances(tenant_pb2.ListRequest(), metadata=bearer(second.token))
    updated = await c.operator.SetTenantQuota(
        operator_pb2.SetTenantQuotaRequest(
            tenant=name, quota=common_pb2.Quota(max_instances=5, max_volume_gib=100), etag=t.etag
        ),
        metadata=c.op_md,
    )
    assert updated.quota.max_instances == 5
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await c.operator.SetTenantQuota(
            operator_pb2.SetTenantQuotaRequest(
                tenant=name, quota=common_pb2.Quota(max_instances=1), etag=t.etag
            ),
            metadata=c.op_md,
        )
    assert exc.value.code() == grpc.StatusCode.ABORTED
    await make_tenant(c, "initech")
    listed = await c.operator.ListTenants(tenant_pb2.ListRequest(page_size=1), metadata=c.op_md)
    assert len(listed.tenants) == 1 and listed.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await c.operator.IssueTenantToken(
            operator_pb2.IssueTenantTokenRequest(tenant="tenants/nobody"), metadata=c.op_md
        )
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


async def test_operator_calls_need_the_operator_token(clients: Clients) -> None:
    c = clients
    for md in ((), bearer("wrong"), (("authorization", "Basic abc"),)):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await c.operator.ListHosts(tenant_pb2.ListRequest(), metadata=md)
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "wrong" not in (exc.value.details() or "")
