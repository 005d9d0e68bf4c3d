"""What each noun shows as a table: ``(HEADER, field getter)`` per column."""

from __future__ import annotations

from bmctl.output import Column
from bmctl.output import field as col

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
