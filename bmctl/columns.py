"""What each noun shows as a table: ``(HEADER, field getter)`` per column."""

from __future__ import annotations

import datetime
from collections.abc import Callable

from google.protobuf.message import Message

from bmctl.output import Column
from bmctl.output import field as col


def when(path: str) -> Callable[[Message], object]:
    """A Timestamp field as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC), or "" when unset."""

    def get(msg: Message) -> object:
        if not msg.HasField(path):
            return ""
        ts = getattr(msg, path)
        moment = datetime.datetime.fromtimestamp(ts.seconds, tz=datetime.UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    return get


HOST_COLUMNS: list[Column] = [
    ("NAME", col("name")),
    ("STATE", col("state")),
    ("ZONE", col("zone")),
    ("RACK", col("rack")),
    ("CLASS", col("host_class")),
    ("DRIVER", col("power_driver")),
    ("CORDONED", col("cordoned")),
    ("INSTANCE", col("instance")),
]
ENROLLED_COLUMNS: list[Column] = [  # EnrollHostResponse
    ("NAME", col("host.name")),
    ("STATE", col("host.state")),
    ("DRIVER", col("host.power_driver")),
    ("AGENT CREDENTIAL", col("agent_credential")),
]
TENANT_COLUMNS: list[Column] = [
    ("NAME", col("name")),
    ("DISPLAY NAME", col("display_name")),
    ("MAX INSTANCES", col("quota.max_instances")),
    ("MAX VOLUME GIB", col("quota.max_volume_gib")),
]
QUOTA_COLUMNS: list[Column] = [
    ("TENANT", col("name")),
    ("INSTANCES", col("usage.instances")),
    ("MAX INSTANCES", col("quota.max_instances")),
    ("VOLUME GIB", col("usage.volume_gib")),
    ("MAX VOLUME GIB", col("quota.max_volume_gib")),
]
TOKEN_COLUMNS: list[Column] = [
    ("TENANT", col("tenant")),
    ("TOKEN ID", col("token_id")),
    ("TOKEN", col("token")),
    ("REPLAYED", col("replayed")),
    ("EXPIRES", when("expire_time")),
]
TOKEN_INFO_COLUMNS: list[Column] = [  # TenantTokenInfo: never a secret
    ("TENANT", col("tenant")),
    ("TOKEN ID", col("token_id")),
    ("CREATED", when("create_time")),
    ("EXPIRES", when("expire_time")),
    ("LAST USED", when("last_use_time")),
    ("REVOKED", when("revoke_time")),
]
TYPE_COLUMNS: list[Column] = [
    ("NAME", col("name")),
    ("HOST CLASS", col("host_class")),
    ("CPUS", col("cpus")),
    ("MEMORY GIB", col("memory_gib")),
]
IMAGE_COLUMNS: list[Column] = [
    ("NAME", col("name")),
    ("OS", col("os")),
    ("SIZE GIB", col("size_gib")),
    ("SOURCE", col("source_uri")),
]
INSTANCE_COLUMNS: list[Column] = [
    ("NAME", col("name")),
    ("STATE", col("state")),
    ("TYPE", col("instance_type")),
    ("IMAGE", col("image")),
    ("HOST", col("host")),
]
VOLUME_COLUMNS: list[Column] = [
    ("NAME", col("name")),
    ("STATE", col("state")),
    ("SIZE GIB", col("size_gib")),
    ("ZONE", col("zone")),
    ("INSTANCE", col("instance")),
]
VPC_COLUMNS: list[Column] = [("NAME", col("name")), ("CIDR", col("cidr")), ("VNI", col("vni"))]
SUBNET_COLUMNS: list[Column] = [("NAME", col("name")), ("CIDR", col("cidr")), ("ZONE", col("zone"))]
NIC_COLUMNS: list[Column] = [
    ("NAME", col("name")),
    ("SUBNET", col("subnet")),
    ("IP", col("private_ip")),
    ("MAC", col("mac_address")),
    ("INSTANCE", col("instance")),
]
GROUP_COLUMNS: list[Column] = [("NAME", col("name")), ("STRATEGY", col("strategy"))]
