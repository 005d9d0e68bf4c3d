"""Bad input: the right status code, a message naming the problem (and a
``BadRequest`` field violation for INVALID_ARGUMENT), and NOT ONE change in
etcd - every case compares a full range dump of the control plane's keys
(values and mod_revisions) before and after the call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bmaas.v1 import agent_pb2, common_pb2, operator_pb2, tenant_pb2
from tests.harness.etcd_dump import etcd_dump
from tools.region.control_plane import Clients, InProcessControlPlane, bearer
from tools.region.etcd import EtcdServer
from tools.region.world import World, build_world, make_tenant

INV = grpc.StatusCode.INVALID_ARGUMENT
NF = grpc.StatusCode.NOT_FOUND
FP = grpc.StatusCode.FAILED_PRECONDITION


@dataclass
class Env:
    world: World
    other_md: tuple[tuple[str, str], ...]
    other_volume: str
    volume: str
    instance: str
    vpc: str
    host_cred: str


@pytest.fixture(scope="module")
def etcd_module() -> Iterator[EtcdServer]:
    with EtcdServer(name="bmaas-bad-input") as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(etcd_module: EtcdServer) -> AsyncIterator[Env]:
    async with (
        InProcessControlPlane(etcd_module, allow_fake_power=True) as plane,
        Clients(plane.port) as c,
    ):
        w = await build_world(c, hosts=2)
        _, other_token = await make_tenant(c, "other")
        other_md = bearer(other_token)
        other_vol = await c.tenant.CreateVolume(
            tenant_pb2.CreateVolumeRequest(volume=common_pb2.Volume(size_gib=10)), metadata=other_md
        )
        vol = await c.tenant.CreateVolume(
            tenant_pb2.CreateVolumeRequest(volume=common_pb2.Volume(size_gib=10)), metadata=w.md
        )
        inst = await c.tenant.CreateInstance(
            tenant_pb2.CreateInstanceRequest(
                instance=common_pb2.Instance(instance_type=w.instance_type, image=w.image)
            ),
            metadata=w.md,
        )
        vpc = await c.tenant.CreateVpc(
            tenant_pb2.CreateVpcRequest(vpc=common_pb2.Vpc(cidr="10.1.0.0/16")), metadata=w.md
        )
        yield Env(
            w, other_md, other_vol.name, vol.name, inst.name, vpc.name, next(iter(w.hosts.values()))
        )


def inst(env: Env, **kw: Any) -> tenant_pb2.CreateInstanceRequest:
    fields: dict[str, Any] = {"instance_type": env.world.instance_type, "image": env.world.image}
    fields.update(kw)
    return tenant_pb2.CreateInstanceRequest(instance=common_pb2.Instance(**fields))


def host(**kw: Any) -> operator_pb2.EnrollHostRequest:
    fields: dict[str, Any] = {
        "zone": "z1",
        "rack": "r1",
        "host_class": "c64",
        "power_driver": "fake",
        "hardware": common_pb2.HardwareProfile(cpus=4, memory_gib=8),
    }
    fields.update(kw)
    return operator_pb2.EnrollHostRequest(host=common_pb2.Host(**fields))


Call = Callable[[Env], tuple[str, str, Any, str]]  # (service, method, request, who)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA test"
CASES: list[tuple[str, Call, grpc.StatusCode, str]] = [
    # --- CreateInstance --------------------------------------------------------------
    (
        "instance missing",
        lambda e: ("tenant", "CreateInstance", tenant_pb2.CreateInstanceRequest(), "t"),
        INV,
        "instance",
    ),
    (
        "type missing",
        lambda e: ("tenant", "CreateInstance", inst(e, instance_type=""), "t"),
        INV,
        "instance.instance_type",
    ),
    (
        "image of wrong kind",
        lambda e: ("tenant", "CreateInstance", inst(e, image="instanceTypes/x"), "t"),
        INV,
        "instance.image",
    ),
    (
        "unknown image",
        lambda e: ("tenant", "CreateInstance", inst(e, image="images/nope"), "t"),
        NF,
        "instance.image",
    ),
    (
        "unknown type",
        lambda e: ("tenant", "CreateInstance", inst(e, instance_type="instanceTypes/nope"), "t"),
        NF,
        "instance.instance_type",
    ),
    (
        "user data too big",
        lambda e: ("tenant", "CreateInstance", inst(e, user_data="x" * 17000), "t"),
        INV,
        "instance.user_data",
    ),
    (
        "bad ssh key",
        lambda e: ("tenant", "CreateInstance", inst(e, ssh_keys=["not a key"]), "t"),
        INV,
        "instance.ssh_keys[0]",
    ),
    (
        "too many ssh keys",
        lambda e: ("tenant", "CreateInstance", inst(e, ssh_keys=[KEY] * 17), "t"),
        INV,
        "instance.ssh_keys",
    ),
    (
        "other tenant's name",
        lambda e: ("tenant", "CreateInstance", inst(e, name="tenants/other/instances/i-1"), "t"),
        NF,
        "instance.name",
    ),
    (
        "uppercase id",
        lambda e: ("tenant", "CreateInstance", inst(e, name="tenants/acme/instances/BAD"), "t"),
        INV,
        "instance.name",
    ),
    (
        "oversized name",
        lambda e: (
            "tenant",
            "CreateInstance",
            inst(e, name="tenants/acme/instances/" + "a" * 5000),
            "t",
        ),
        INV,
        "instance.name",
    ),
    (
        "bad request id",
        lambda e: (
            "tenant",
            "CreateInstance",
            tenant_pb2.CreateInstanceRequest(request_id="has space", instance=inst(e).instance),
            "t",
        ),
        INV,
        "request_id",
    ),
    (
        "other tenant's volume",
        lambda e: ("tenant", "CreateInstance", inst(e, volumes=[e.other_volume]), "t"),
        NF,
        "instance.volumes[0]",
    ),
    (
        "duplicate volume",
        lambda e: ("tenant", "CreateInstance", inst(e, volumes=[e.volume, e.volume]), "t"),
        INV,
        "instance.volumes",
    ),
    (
        "unknown subnet",
        lambda e: ("tenant", "CreateInstance", inst(e, subnet=e.vpc + "/subnets/nope"), "t"),
        NF,
        "instance.subnet",
    ),
    (
        "bad zone",
        lambda e: ("tenant", "CreateInstance", inst(e, zone="Zone_1"), "t"),
        INV,
        "instance.zone",
    ),
    (
        "unknown placement group",
        lambda e: (
            "tenant",
            "CreateInstance",
            inst(e, placement_group="tenants/acme/placementGroups/pg"),
            "t",
        ),
        NF,
        "instance.placement_group",
    ),
    (
        "no token",
        lambda e: ("tenant", "CreateInstance", inst(e), "none"),
        grpc.StatusCode.UNAUTHENTICATED,
        "authorization",
    ),
    # --- instance actions and reads ---------------------------------------------------
    (
        "get without name",
        lambda e: ("tenant", "GetInstance", tenant_pb2.GetRequest(), "t"),
        INV,
        "name",
    ),
    (
        "get other tenant's",
        lambda e: ("tenant", "GetInstance", tenant_pb2.GetRequest(name=e.instance), "o"),
        NF,
        "not found",
    ),
    (
        "stop with bad etag",
        lambda e: (
            "tenant",
            "StopInstance",
            tenant_pb2.InstanceActionRequest(name=e.instance, etag="abc"),
            "t",
        ),
        INV,
        "etag",
    ),
    (
        "stop a scheduled instance",
        lambda e: (
            "tenant",
            "StopInstance",
            tenant_pb2.InstanceActionRequest(name=e.instance),
            "t",
        ),
        FP,
        "SCHEDULED",
    ),
    (
        "terminate other's",
        lambda e: (
            "tenant",
            "TerminateInstance",
            tenant_pb2.InstanceActionRequest(name=e.instance),
            "o",
        ),
        NF,
        "not found",
    ),
    (
        "console max_bytes",
        lambda e: (
            "tenant",
            "GetConsoleOutput",
            tenant_pb2.GetConsoleOutputRequest(name=e.instance, max_bytes=10**9),
            "t",
        ),
        INV,
        "max_bytes",
    ),
    (
        "negative page size",
        lambda e: ("tenant", "ListInstances", tenant_pb2.ListRequest(page_size=-1), "t"),
        INV,
        "page_size",
    ),
    (
        "filter syntax",
        lambda e: ("tenant", "ListInstances", tenant_pb2.ListRequest(filter="state=="), "t"),
        INV,
        "filter",
    ),
    (
        "filter unknown field",
        lambda e: ("tenant", "ListInstances", tenant_pb2.ListRequest(filter="colour=red"), "t"),
        INV,
        "filter",
    ),
    (
        "garbage page token",
        lambda e: ("tenant", "ListVolumes", tenant_pb2.ListRequest(page_token="%%%"), "t"),
        INV,
        "page_token",
    ),
    # --- volumes ----------------------------------------------------------------------
    (
        "volume size 0",
        lambda e: (
            "tenant",
            "CreateVolume",
            tenant_pb2.CreateVolumeRequest(volume=common_pb2.Volume(size_gib=0)),
            "t",
        ),
        INV,
        "volume.size_gib",
    ),
    (
        "volume too big",
        lambda e: (
            "tenant",
            "CreateVolume",
            tenant_pb2.CreateVolumeRequest(volume=common_pb2.Volume(size_gib=10**9)),
            "t",
        ),
        INV,
        "volume.size_gib",
    ),
    (
        "volume smaller than image",
        lambda e: (
            "tenant",
            "CreateVolume",
            tenant_pb2.CreateVolumeRequest(
                volume=common_pb2.Volume(size_gib=1, image=e.world.image)
            ),
            "t",
        ),
        INV,
        "volume.size_gib",
    ),
    (
        "volume over quota",
        lambda e: (
            "tenant",
            "CreateVolume",
            tenant_pb2.CreateVolumeRequest(volume=common_pb2.Volume(size_gib=9999)),
            "t",
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "quota",
    ),
    (
        "shrink volume",
        lambda e: (
            "tenant",
            "ResizeVolume",
            tenant_pb2.ResizeVolumeRequest(name=e.volume, size_gib=5),
            "t",
        ),
        INV,
        "size_gib",
    ),
    (
        "attach to other's instance",
        lambda e: (
            "tenant",
            "AttachVolume",
            tenant_pb2.AttachVolumeRequest(name=e.other_volume, instance=e.instance),
            "o",
        ),
        NF,
        "instance",
    ),
    (
        "delete other's volume",
        lambda e: ("tenant", "DeleteVolume", tenant_pb2.DeleteRequest(name=e.volume), "o"),
        NF,
        "not found",
    ),
    # --- networking -------------------------------------------------------------------
    (
        "vpc cidr /33",
        lambda e: (
            "tenant",
            "CreateVpc",
            tenant_pb2.CreateVpcRequest(vpc=common_pb2.Vpc(cidr="10.0.0.0/33")),
            "t",
        ),
        INV,
        "vpc.cidr",
    ),
    (
        "vpc public cidr",
        lambda e: (
            "tenant",
            "CreateVpc",
            tenant_pb2.CreateVpcRequest(vpc=common_pb2.Vpc(cidr="8.8.8.0/24")),
            "t",
        ),
        INV,
        "vpc.cidr",
    ),
    (
        "vpc host bits",
        lambda e: (
            "tenant",
            "CreateVpc",
            tenant_pb2.CreateVpcRequest(vpc=common_pb2.Vpc(cidr="10.0.0.1/16")),
            "t",
        ),
        INV,
        "vpc.cidr",
    ),
    (
        "subnet without parent",
        lambda e: (
            "tenant",
            "CreateSubnet",
            tenant_pb2.CreateSubnetRequest(subnet=common_pb2.Subnet(cidr="10.1.1.0/24")),
            "t",
        ),
        INV,
        "parent",
    ),
    (
        "subnet outside vpc",
        lambda e: (
            "tenant",
            "CreateSubnet",
            tenant_pb2.CreateSubnetRequest(
                parent=e.vpc, subnet=common_pb2.Subnet(cidr="10.2.0.0/24")
            ),
            "t",
        ),
        INV,
        "subnet.cidr",
    ),
    (
        "nic in unknown subnet",
        lambda e: (
            "tenant",
            "CreateNetworkInterface",
            tenant_pb2.CreateNetworkInterfaceRequest(
                network_interface=common_pb2.NetworkInterface(subnet=e.vpc + "/subnets/x")
            ),
            "t",
        ),
        NF,
        "network_interface.subnet",
    ),
    # --- operator ---------------------------------------------------------------------
    (
        "host without hardware",
        lambda e: ("operator", "EnrollHost", host(hardware=None), "op"),
        INV,
        "host.hardware",
    ),
    (
        "host with 0 cpus",
        lambda e: (
            "operator",
            "EnrollHost",
            host(hardware=common_pb2.HardwareProfile(cpus=0, memory_gib=8)),
            "op",
        ),
        INV,
        "host.hardware.cpus",
    ),
    (
        "host disk size 0",
        lambda e: (
            "operator",
            "EnrollHost",
            host(
                hardware=common_pb2.HardwareProfile(
                    cpus=1, memory_gib=8, disks=[common_pb2.Disk(name="d", size_gib=0)]
                )
            ),
            "op",
        ),
        INV,
        "host.hardware.disks[0].size_gib",
    ),
    (
        "host bad zone",
        lambda e: ("operator", "EnrollHost", host(zone="EU West"), "op"),
        INV,
        "host.zone",
    ),
    (
        "host oversized rack",
        lambda e: ("operator", "EnrollHost", host(rack="r" * 300), "op"),
        INV,
        "host.rack",
    ),
    (
        "host without a power driver",
        lambda e: ("operator", "EnrollHost", host(power_driver=""), "op"),
        INV,
        "host.power_driver: is required",
    ),
    (
        "host bad power driver",
        lambda e: ("operator", "EnrollHost", host(power_driver="ipmi"), "op"),
        INV,
        "host.power_driver",
    ),
    (
        "enroll with tenant token",
        lambda e: ("operator", "EnrollHost", host(), "t"),
        grpc.StatusCode.UNAUTHENTICATED,
        "operator",
    ),
    (
        "type without name",
        lambda e: (
            "operator",
            "CreateInstanceType",
            operator_pb2.CreateInstanceTypeRequest(
                instance_type=common_pb2.InstanceType(host_class="c", cpus=1, memory_gib=1)
            ),
            "op",
        ),
        INV,
        "instance_type.name",
    ),
    (
        "type with 0 memory",
        lambda e: (
            "operator",
            "CreateInstanceType",
            operator_pb2.CreateInstanceTypeRequest(
                instance_type=common_pb2.InstanceType(
                    name="instanceTypes/x", host_class="c", cpus=1
                )
            ),
            "op",
        ),
        INV,
        "instance_type.memory_gib",
    ),
    (
        "image ftp uri",
        lambda e: (
            "operator",
            "RegisterImage",
            operator_pb2.RegisterImageRequest(
                image=common_pb2.Image(name="images/x", source_uri="ftp://x")
            ),
            "op",
        ),
        INV,
        "image.source_uri",
    ),
    (
        "image bad checksum",
        lambda e: (
            "operator",
            "RegisterImage",
            operator_pb2.RegisterImageRequest(
                image=common_pb2.Image(name="images/x", source_uri="file:///x", checksum="md5:1")
            ),
            "op",
        ),
        INV,
        "image.checksum",
    ),
    (
        "tenant name too long",
        lambda e: (
            "operator",
            "CreateTenant",
            operator_pb2.CreateTenantRequest(tenant=common_pb2.Tenant(display_name="d" * 300)),
            "op",
        ),
        INV,
        "tenant.display_name",
    ),
    (
        "tenant quota too high",
        lambda e: (
            "operator",
            "CreateTenant",
            operator_pb2.CreateTenantRequest(
                tenant=common_pb2.Tenant(quota=common_pb2.Quota(max_instances=10**6))
            ),
            "op",
        ),
        INV,
        "tenant.quota.max_instances",
    ),
    (
        "quota of unknown tenant",
        lambda e: (
            "operator",
            "SetTenantQuota",
            operator_pb2.SetTenantQuotaRequest(tenant="tenants/nobody", quota=common_pb2.Quota()),
            "op",
        ),
        NF,
        "not found",
    ),
    (
        "token for malformed tenant",
        lambda e: (
            "operator",
            "IssueTenantToken",
            operator_pb2.IssueTenantTokenRequest(tenant="acme"),
            "op",
        ),
        INV,
        "tenant",
    ),
    (
        "decommission available host",
        lambda e: (
            "operator",
            "DecommissionHost",
            operator_pb2.HostActionRequest(name="hosts/h0"),
            "op",
        ),
        FP,
        "maintenance",
    ),
    # --- agent ------------------------------------------------------------------------
    (
        "agent registers another host",
        lambda e: ("agent", "Register", agent_pb2.RegisterRequest(host="hosts/h1"), "agent"),
        grpc.StatusCode.PERMISSION_DENIED,
        "hosts/h0",
    ),
    (
        "agent version too long",
        lambda e: (
            "agent",
            "Register",
            agent_pb2.RegisterRequest(host="hosts/h0", agent_version="v" * 100),
            "agent",
        ),
        INV,
        "agent_version",
    ),
]


def field_violations(err: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(err)
    out: list[str] = []
    for detail in status.details if status else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            out += [v.field for v in bad.field_violations]
    return out


@pytest.mark.parametrize(("what", "call", "code", "needle"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_refused_without_writes(
    env: Env, etcd_module: EtcdServer, what: str, call: Call, code: grpc.StatusCode, needle: str
) -> None:
    c = env.world.clients
    service, method, request, who = call(env)
    md = {
        "t": env.world.md,
        "o": env.other_md,
        "op": c.op_md,
        "agent": bearer(env.host_cred),
        "none": (),
    }[who]
    stub = {"tenant": c.tenant, "operator": c.operator, "agent": c.agent}[service]
    before = await etcd_dump(etcd_module)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await getattr(stub, method)(request, metadata=md, timeout=10)
    after = await etcd_dump(etcd_module)
    err = exc.value
    assert err.code() == code, f"{what}: {err.code()} {err.details()}"
    assert needle in (err.details() or ""), f"{what}: message {err.details()!r} lacks {needle!r}"
    if code == INV:
        fields = field_violations(err)
        assert fields and needle.split(".")[0] in fields[0], f"{what}: violations {fields}"
    assert before == after, f"{what}: etcd changed: {set(before) ^ set(after)}"
