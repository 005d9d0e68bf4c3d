"""List filters in proto field names: what is accepted, refused and matched."""

from __future__ import annotations

import pytest

from bmaas.v1 import common_pb2
from control_plane.api import convert
from control_plane.api.errors import InvalidField
from control_plane.api.filters import compile_filter, filterable_fields
from control_plane.domain.compute import Image, Instance
from control_plane.domain.host import HardwareProfile, Host
from control_plane.domain.lifecycle import HostState, InstanceState
from control_plane.domain.network import NetworkInterface
from control_plane.domain.tenant import Quota, Tenant
from control_plane.domain.volume import Volume

HOST = Host(
    id="h1",
    zone="z1",
    rack="r1",
    host_class="c64",
    hardware=HardwareProfile(cpus=64, memory_gib=256),
    state=HostState.ALLOCATED,
    assigned_instance="tenants/a/instances/i-1",
    agent_credential_hash="secret",
)


def match(text: str, message: type, to_pb: object, record: object) -> bool:
    return compile_filter(text, message, to_pb).matches(record)  # type: ignore[arg-type]


def test_documented_proto_names_work() -> None:
    assert match("instance=tenants/a/instances/i-1", common_pb2.Host, convert.host, HOST)
    assert match('name="hosts/h1" AND state=ALLOCATED', common_pb2.Host, convert.host, HOST)
    assert match("state=HOST_STATE_ALLOCATED", common_pb2.Host, convert.host, HOST)
    assert match("hardware.cpus=64 AND cordoned=false", common_pb2.Host, convert.host, HOST)
    assert not match("state!=ALLOCATED", common_pb2.Host, convert.host, HOST)
    image = Image(id="d12", source="file:///d12.raw")
    assert match('source_uri="file:///d12.raw"', common_pb2.Image, convert.image, image)
    vol = Volume(tenant="a", id="v1", size_gib=10, attached_to="tenants/a/instances/i-1")
    assert match(
        "instance=tenants/a/instances/i-1 AND state=IN_USE", common_pb2.Volume, convert.volume, vol
    )
    nic = NetworkInterface(tenant="a", id="n1", subnet="s", ip_address="10.0.0.5")
    assert match("private_ip=10.0.0.5", common_pb2.NetworkInterface, convert.network_interface, nic)
    inst = Instance(tenant="a", id="i-1", instance_type="t", image="i", state=InstanceState.RUNNING)
    assert match('state=RUNNING AND host=""', common_pb2.Instance, convert.instance, inst)
    tenant = Tenant(id="a", quota=Quota(max_instances=3))
    assert match("quota.max_instances=3", common_pb2.Tenant, convert.tenant, tenant)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("assigned_instance=x", "assigned_instance"),  # the record's name, not the proto's
        ("agent_credential_hash=x", "agent_credential_hash"),
        ("colour=red", "colour"),
        ("conditions=x", "repeated"),
        ("hardware=x", "message"),
        ("create_time=1", "timestamp"),
        ("hardware.disks.name=x", "repeated"),
        ("state=RUNNING", "RUNNING"),  # a host is never RUNNING
        ("cordoned=yes", "true or false"),
        ("hardware.cpus=many", "integer"),
        ("zone==z1", "syntax"),
        ("zone=z1 OR zone=z2", "AND"),
    ],
)
def test_refused_with_invalid_field_naming_it(text: str, needle: str) -> None:
    with pytest.raises(InvalidField) as exc:
        compile_filter(text, common_pb2.Host, convert.host)
    assert exc.value.field == "filter"
    assert needle in str(exc.value)


def test_tenant_usage_is_not_filterable() -> None:
    with pytest.raises(InvalidField, match="usage"):
        compile_filter("usage.instances=0", common_pb2.Tenant, convert.tenant)
    assert "usage.instances" not in filterable_fields(common_pb2.Tenant.DESCRIPTOR)
    assert "quota.max_instances" in filterable_fields(common_pb2.Tenant.DESCRIPTOR)


def test_an_unknown_field_error_is_bounded() -> None:
    with pytest.raises(InvalidField) as exc:
        compile_filter("a" * 30000 + "=1", common_pb2.Host, convert.host)
    assert len(str(exc.value)) < 1024
