"""The ``bmctl <noun> <verb>`` command table.

Each verb is a small function ``(client, args) -> Result``: it builds one
request message from parsed arguments, makes one RPC (list verbs follow
``next_page_token`` until ``--limit`` rows or the end), and returns the
messages to print with the noun's column spec.  ``register(subparsers)``
declares every noun/verb with argparse; the verb function is stored as the
parser default ``func``.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import Message

from bmaas.v1 import agent_pb2, common_pb2, operator_pb2, tenant_pb2
from bmctl.client import Client, CliError
from bmctl.output import Column
from bmctl.output import field as col

_ = agent_pb2  # the agent service is not driven from the CLI


@dataclass
class Result:
    messages: list[Message]
    columns: Sequence[Column] = ()
    single: bool = False  # print one object (JSON object, not array)
    notes: list[str] = field(default_factory=list)  # printed after the table (stderr)


Verb = Callable[[Client, argparse.Namespace], Result]

HOST_COLUMNS: list[Column] = [
    ("NAME", col("name")),
    ("STATE", col("state")),
    ("ZONE", col("zone")),
    ("RACK", col("rack")),
    ("CLASS", col("host_class")),
    ("CORDONED", col("cordoned")),
    ("INSTANCE", col("instance")),
]
TENANT_COLUMNS: list[Column] = [
    ("NAME", col("name")),
    ("DISPLAY NAME", col("display_name")),
    ("MAX INSTANCES", col("quota.max_instances")),
    ("MAX VOLUME GIB", col("quota.max_volume_gib")),
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


def _request_id(args: argparse.Namespace) -> str:
    return str(args.request_id or uuid.uuid4())


def _list(
    client: Client,
    service: str,
    method: str,
    attr: str,
    args: argparse.Namespace,
    columns: Sequence[Column],
) -> Result:
    out: list[Message] = []
    token = ""
    while True:
        req = tenant_pb2.ListRequest(page_size=args.page_size, page_token=token, filter=args.filter)
        resp = client.call(service, method, req)
        out.extend(getattr(resp, attr))
        token = getattr(resp, "next_page_token", "")
        if not token or (args.limit and len(out) >= args.limit):
            break
    if args.limit:
        out = out[: args.limit]
    return Result(out, columns)


def _one(msg: Message, columns: Sequence[Column]) -> Result:
    return Result([msg], columns, single=True)


def _labels_kv(pairs: Sequence[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise CliError(f"{flag}: expected KEY=VALUE, got {pair!r}", 2)
        out[key] = value
    return out


# --- hosts -------------------------------------------------------------------------------


def host_enroll(client: Client, args: argparse.Namespace) -> Result:
    disks = [
        common_pb2.Disk(name=f"nvme{i}", size_gib=size, kind="nvme")
        for i, size in enumerate(args.disk_gib)
    ]
    nics = [common_pb2.Nic(name=f"eth{i}", speed_gbps=args.nic_gbps) for i in range(args.nics)]
    host = common_pb2.Host(
        name=f"hosts/{args.id}" if args.id else "",
        zone=args.zone,
        rack=args.rack,
        host_class=args.host_class,
        power_driver=args.power_driver,
        hardware=common_pb2.HardwareProfile(
            cpus=args.cpus, memory_gib=args.memory_gib, disks=disks, nics=nics
        ),
    )
    req = operator_pb2.EnrollHostRequest(request_id=_request_id(args), host=host)
    resp = client.call("operator", "EnrollHost", req)
    assert isinstance(resp, operator_pb2.EnrollHostResponse)
    result = _one(resp, [("NAME", col("host.name")), ("STATE", col("host.state"))])
    result.columns = [*result.columns, ("AGENT CREDENTIAL", col("agent_credential"))]
    if resp.agent_credential:
        result.notes.append("the agent credential is shown once: store it on the host now")
    return result


def host_list(client: Client, args: argparse.Namespace) -> Result:
    return _list(client, "operator", "ListHosts", "hosts", args, HOST_COLUMNS)


def host_get(client: Client, args: argparse.Namespace) -> Result:
    return _one(
        client.call("operator", "GetHost", tenant_pb2.GetRequest(name=args.name)), HOST_COLUMNS
    )


def _host_action(method: str) -> Verb:
    def run(client: Client, args: argparse.Namespace) -> Result:
        req = operator_pb2.HostActionRequest(name=args.name, etag=args.etag, reason=args.reason)
        return _one(client.call("operator", method, req), HOST_COLUMNS)

    return run


def host_maintenance(client: Client, args: argparse.Namespace) -> Result:
    req = operator_pb2.SetHostMaintenanceRequest(
        name=args.name, maintenance=args.state == "on", etag=args.etag, reason=args.reason
    )
    return _one(client.call("operator", "SetHostMaintenance", req), HOST_COLUMNS)


# --- tenants -----------------------------------------------------------------------------


def tenant_create(client: Client, args: argparse.Namespace) -> Result:
    tenant = common_pb2.Tenant(
        name=f"tenants/{args.id}" if args.id else "",
        display_name=args.display_name,
        quota=common_pb2.Quota(
            max_instances=args.max_instances, max_volume_gib=args.max_volume_gib
        ),
    )
    req = operator_pb2.CreateTenantRequest(request_id=_request_id(args), tenant=tenant)
    return _one(client.call("operator", "CreateTenant", req), TENANT_COLUMNS)


def tenant_list(client: Client, args: argparse.Namespace) -> Result:
    return _list(client, "operator", "ListTenants", "tenants", args, TENANT_COLUMNS)


def tenant_get(client: Client, args: argparse.Namespace) -> Result:
    resp = client.call("operator", "GetTenant", tenant_pb2.GetRequest(name=args.name))
    return _one(resp, TENANT_COLUMNS)


def tenant_token(client: Client, args: argparse.Namespace) -> Result:
    req = operator_pb2.IssueTenantTokenRequest(tenant=args.name, request_id=_request_id(args))
    resp = client.call("operator", "IssueTenantToken", req)
    result = _one(resp, [("TENANT", col("tenant")), ("TOKEN", col("token"))])
    result.notes.append("the token is shown once: store it now")
    return result


def tenant_quota(client: Client, args: argparse.Namespace) -> Result:
    req = operator_pb2.SetTenantQuotaRequest(
        tenant=args.name,
        quota=common_pb2.Quota(
            max_instances=args.max_instances, max_volume_gib=args.max_volume_gib
        ),
        etag=args.etag,
    )
    return _one(client.call("operator", "SetTenantQuota", req), TENANT_COLUMNS)


# --- catalogue ---------------------------------------------------------------------------


def type_create(client: Client, args: argparse.Namespace) -> Result:
    itype = common_pb2.InstanceType(
        name=f"instanceTypes/{args.id}",
        host_class=args.host_class,
        cpus=args.cpus,
        memory_gib=args.memory_gib,
        description=args.description,
    )
    req = operator_pb2.CreateInstanceTypeRequest(request_id=_request_id(args), instance_type=itype)
    return _one(client.call("operator", "CreateInstanceType", req), TYPE_COLUMNS)


def type_list(client: Client, args: argparse.Namespace) -> Result:
    service = "operator" if args.operator else "tenant"
    return _list(client, service, "ListInstanceTypes", "instance_types", args, TYPE_COLUMNS)


def image_register(client: Client, args: argparse.Namespace) -> Result:
    image = common_pb2.Image(
        name=f"images/{args.id}",
        display_name=args.display_name,
        os=args.os,
        source_uri=args.source_uri,
        size_gib=args.size_gib,
        checksum=args.checksum,
    )
    req = operator_pb2.RegisterImageRequest(request_id=_request_id(args), image=image)
    return _one(client.call("operator", "RegisterImage", req), IMAGE_COLUMNS)


def image_list(client: Client, args: argparse.Namespace) -> Result:
    service = "operator" if args.operator else "tenant"
    return _list(client, service, "ListImages", "images", args, IMAGE_COLUMNS)


# --- instances ---------------------------------------------------------------------------


def instance_create(client: Client, args: argparse.Namespace) -> Result:
    user_data = ""
    if args.user_data_file:
        try:
            user_data = Path(args.user_data_file).read_text()
        except OSError as exc:
            raise CliError(f"--user-data-file: {exc}", 2) from exc
    ssh_keys = []
    for path in args.ssh_key_file:
        try:
            ssh_keys.append(Path(path).read_text().strip())
        except OSError as exc:
            raise CliError(f"--ssh-key-file: {exc}", 2) from exc
    inst = common_pb2.Instance(
        name=args.name,
        instance_type=_qualify("instanceTypes", args.type),
        image=_qualify("images", args.image),
        subnet=args.subnet,
        volumes=args.volume,
        user_data=user_data,
        ssh_keys=[*args.ssh_key, *ssh_keys],
        placement_group=args.placement_group,
        zone=args.zone,
    )
    req = tenant_pb2.CreateInstanceRequest(request_id=_request_id(args), instance=inst)
    return _one(client.call("tenant", "CreateInstance", req), INSTANCE_COLUMNS)


def _qualify(collection: str, value: str) -> str:
    return value if not value or "/" in value else f"{collection}/{value}"


def instance_list(client: Client, args: argparse.Namespace) -> Result:
    return _list(client, "tenant", "ListInstances", "instances", args, INSTANCE_COLUMNS)


def instance_get(client: Client, args: argparse.Namespace) -> Result:
    resp = client.call("tenant", "GetInstance", tenant_pb2.GetRequest(name=args.name))
    return _one(resp, INSTANCE_COLUMNS)


def _instance_action(method: str) -> Verb:
    def run(client: Client, args: argparse.Namespace) -> Result:
        req = tenant_pb2.InstanceActionRequest(
            name=args.name, etag=args.etag, request_id=_request_id(args)
        )
        return _one(client.call("tenant", method, req), INSTANCE_COLUMNS)

    return run


def instance_console(client: Client, args: argparse.Namespace) -> Result:
    req = tenant_pb2.GetConsoleOutputRequest(name=args.name, max_bytes=args.max_bytes)
    resp = client.call("tenant", "GetConsoleOutput", req)
    return _one(resp, [("OUTPUT", col("output"))])


# --- volumes and networks ----------------------------------------------------------------


def volume_create(client: Client, args: argparse.Namespace) -> Result:
    vol = common_pb2.Volume(
        name=args.name, size_gib=args.size_gib, zone=args.zone, image=_qualify("images", args.image)
    )
    req = tenant_pb2.CreateVolumeRequest(request_id=_request_id(args), volume=vol)
    return _one(client.call("tenant", "CreateVolume", req), VOLUME_COLUMNS)


def volume_list(client: Client, args: argparse.Namespace) -> Result:
    return _list(client, "tenant", "ListVolumes", "volumes", args, VOLUME_COLUMNS)


def volume_get(client: Client, args: argparse.Namespace) -> Result:
    resp = client.call("tenant", "GetVolume", tenant_pb2.GetRequest(name=args.name))
    return _one(resp, VOLUME_COLUMNS)


def volume_attach(client: Client, args: argparse.Namespace) -> Result:
    req = tenant_pb2.AttachVolumeRequest(name=args.name, instance=args.instance, etag=args.etag)
    return _one(client.call("tenant", "AttachVolume", req), VOLUME_COLUMNS)


def volume_detach(client: Client, args: argparse.Namespace) -> Result:
    req = tenant_pb2.DetachVolumeRequest(name=args.name, etag=args.etag)
    return _one(client.call("tenant", "DetachVolume", req), VOLUME_COLUMNS)


def volume_resize(client: Client, args: argparse.Namespace) -> Result:
    req = tenant_pb2.ResizeVolumeRequest(name=args.name, size_gib=args.size_gib, etag=args.etag)
    return _one(client.call("tenant", "ResizeVolume", req), VOLUME_COLUMNS)


def vpc_create(client: Client, args: argparse.Namespace) -> Result:
    req = tenant_pb2.CreateVpcRequest(
        request_id=_request_id(args), vpc=common_pb2.Vpc(name=args.name, cidr=args.cidr)
    )
    return _one(client.call("tenant", "CreateVpc", req), VPC_COLUMNS)


def vpc_list(client: Client, args: argparse.Namespace) -> Result:
    return _list(client, "tenant", "ListVpcs", "vpcs", args, VPC_COLUMNS)


def subnet_create(client: Client, args: argparse.Namespace) -> Result:
    req = tenant_pb2.CreateSubnetRequest(
        request_id=_request_id(args),
        parent=args.vpc,
        subnet=common_pb2.Subnet(name=args.name, cidr=args.cidr, zone=args.zone),
    )
    return _one(client.call("tenant", "CreateSubnet", req), SUBNET_COLUMNS)


def subnet_list(client: Client, args: argparse.Namespace) -> Result:
    return _list(client, "tenant", "ListSubnets", "subnets", args, SUBNET_COLUMNS)


def _delete(method: str) -> Verb:
    def run(client: Client, args: argparse.Namespace) -> Result:
        client.call("tenant", method, tenant_pb2.DeleteRequest(name=args.name, etag=args.etag))
        return Result([], notes=[f"deleted {args.name}"])

    return run


NIC_COLUMNS: list[Column] = [
    ("NAME", col("name")),
    ("SUBNET", col("subnet")),
    ("IP", col("private_ip")),
    ("MAC", col("mac_address")),
    ("INSTANCE", col("instance")),
]
GROUP_COLUMNS: list[Column] = [("NAME", col("name")), ("STRATEGY", col("strategy"))]


def nic_create(client: Client, args: argparse.Namespace) -> Result:
    req = tenant_pb2.CreateNetworkInterfaceRequest(
        request_id=_request_id(args),
        network_interface=common_pb2.NetworkInterface(name=args.name, subnet=args.subnet),
    )
    return _one(client.call("tenant", "CreateNetworkInterface", req), NIC_COLUMNS)


def nic_list(client: Client, args: argparse.Namespace) -> Result:
    return _list(client, "tenant", "ListNetworkInterfaces", "network_interfaces", args, NIC_COLUMNS)


def nic_attach(client: Client, args: argparse.Namespace) -> Result:
    req = tenant_pb2.AttachNetworkInterfaceRequest(
        name=args.name, instance=args.instance, etag=args.etag
    )
    return _one(client.call("tenant", "AttachNetworkInterface", req), NIC_COLUMNS)


def nic_detach(client: Client, args: argparse.Namespace) -> Result:
    req = tenant_pb2.DetachNetworkInterfaceRequest(name=args.name, etag=args.etag)
    return _one(client.call("tenant", "DetachNetworkInterface", req), NIC_COLUMNS)


def group_create(client: Client, args: argparse.Namespace) -> Result:
    req = tenant_pb2.CreatePlacementGroupRequest(
        request_id=_request_id(args), placement_group=common_pb2.PlacementGroup(name=args.name)
    )
    return _one(client.call("tenant", "CreatePlacementGroup", req), GROUP_COLUMNS)


def group_list(client: Client, args: argparse.Namespace) -> Result:
    return _list(client, "tenant", "ListPlacementGroups", "placement_groups", args, GROUP_COLUMNS)


# --- argparse wiring ---------------------------------------------------------------------


def _add_list(sub: argparse._SubParsersAction[argparse.ArgumentParser], func: Verb) -> None:
    p = sub.add_parser("list", help="list (follows pages)")
    p.add_argument("--filter", default="", help="e.g. 'state=RUNNING AND zone=z1'")
    p.add_argument("--page-size", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="stop after N rows (0 = all)")
    p.add_argument("--operator", action="store_true", help="use the operator service")
    p.set_defaults(func=func)


def _verb(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    func: Verb,
    help_: str,
    *,
    positional: str | None = None,
    etag: bool = False,
    request_id: bool = False,
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_)
    if positional:
        p.add_argument("name", metavar=positional)
    if etag:
        p.add_argument("--etag", default="", help="fail with ABORTED if the resource changed")
    if request_id:
        p.add_argument("--request-id", default="", help="idempotency key (default: random)")
    p.set_defaults(func=func)
    return p


def register(nouns: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # host
    host = nouns.add_parser("host", help="physical hosts (operator)").add_subparsers(
        dest="verb", required=True
    )
    p = _verb(
        host,
        "enroll",
        host_enroll,
        "enroll a host; prints its agent credential once",
        request_id=True,
    )
    p.add_argument("--id", default="", help="host id (default: server-generated)")
    p.add_argument("--zone", required=True)
    p.add_argument("--rack", required=True)
    p.add_argument("--host-class", required=True)
    p.add_argument("--cpus", type=int, required=True)
    p.add_argument("--memory-gib", type=int, required=True)
    p.add_argument("--disk-gib", type=int, action="append", default=[])
    p.add_argument("--nics", type=int, default=1)
    p.add_argument("--nic-gbps", type=int, default=25)
    p.add_argument("--power-driver", default="fake", choices=["fake", "qemu"])
    _add_list(host, host_list)
    _verb(host, "get", host_get, "show a host", positional="NAME")
    for verb, method, text in (
        ("cordon", "CordonHost", "no new placements"),
        ("uncordon", "UncordonHost", "allow placements again"),
        ("drain", "DrainHost", "cordon and terminate the bound instance"),
        ("decommission", "DecommissionHost", "retire the host for good"),
    ):
        p = _verb(host, verb, _host_action(method), text, positional="NAME", etag=True)
        p.add_argument("--reason", default="")
    p = _verb(
        host, "maintenance", host_maintenance, "maintenance on|off", positional="NAME", etag=True
    )
    p.add_argument("state", choices=["on", "off"])
    p.add_argument("--reason", default="")

    # tenant
    tenant = nouns.add_parser("tenant", help="tenants (operator)").add_subparsers(
        dest="verb", required=True
    )
    p = _verb(tenant, "create", tenant_create, "create a tenant", request_id=True)
    p.add_argument("--id", default="")
    p.add_argument("--display-name", default="")
    p.add_argument("--max-instances", type=int, default=10)
    p.add_argument("--max-volume-gib", type=int, default=10240)
    _add_list(tenant, tenant_list)
    _verb(tenant, "get", tenant_get, "show a tenant", positional="NAME")
    _verb(
        tenant,
        "token",
        tenant_token,
        "issue a bearer token (shown once)",
        positional="NAME",
        request_id=True,
    )
    p = _verb(tenant, "quota", tenant_quota, "set quotas", positional="NAME", etag=True)
    p.add_argument("--max-instances", type=int, required=True)
    p.add_argument("--max-volume-gib", type=int, required=True)

    # instance-type
    itype = nouns.add_parser("instance-type", help="instance types").add_subparsers(
        dest="verb", required=True
    )
    p = _verb(itype, "create", type_create, "create an instance type (operator)", request_id=True)
    p.add_argument("id")
    p.add_argument("--host-class", required=True)
    p.add_argument("--cpus", type=int, required=True)
    p.add_argument("--memory-gib", type=int, required=True)
    p.add_argument("--description", default="")
    _add_list(itype, type_list)

    # image
    image = nouns.add_parser("image", help="boot images").add_subparsers(dest="verb", required=True)
    p = _verb(image, "register", image_register, "register an image (operator)", request_id=True)
    p.add_argument("id")
    p.add_argument("--source-uri", required=True)
    p.add_argument("--os", default="linux")
    p.add_argument("--size-gib", type=int, default=10)
    p.add_argument("--display-name", default="")
    p.add_argument("--checksum", default="")
    _add_list(image, image_list)

    # instance
    inst = nouns.add_parser("instance", help="instances (tenant)").add_subparsers(
        dest="verb", required=True
    )
    p = _verb(inst, "create", instance_create, "rent a whole host", request_id=True)
    p.add_argument("--name", default="", help="full name (default: server-generated)")
    p.add_argument("--type", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--subnet", default="")
    p.add_argument("--volume", action="append", default=[])
    p.add_argument("--ssh-key", action="append", default=[], help="public key text")
    p.add_argument("--ssh-key-file", action="append", default=[])
    p.add_argument("--user-data-file", default="")
    p.add_argument("--placement-group", default="")
    p.add_argument("--zone", default="")
    _add_list(inst, instance_list)
    _verb(inst, "get", instance_get, "show an instance", positional="NAME")
    for verb, method in (
        ("start", "StartInstance"),
        ("stop", "StopInstance"),
        ("reboot", "RebootInstance"),
        ("terminate", "TerminateInstance"),
    ):
        _verb(
            inst,
            verb,
            _instance_action(method),
            f"{verb} an instance",
            positional="NAME",
            etag=True,
            request_id=True,
        )
    p = _verb(inst, "console", instance_console, "serial console tail", positional="NAME")
    p.add_argument("--max-bytes", type=int, default=0)

    # volume
    vol = nouns.add_parser("volume", help="cloud disks (tenant)").add_subparsers(
        dest="verb", required=True
    )
    p = _verb(vol, "create", volume_create, "create a volume", request_id=True)
    p.add_argument("--name", default="")
    p.add_argument("--size-gib", type=int, required=True)
    p.add_argument("--zone", default="")
    p.add_argument("--image", default="")
    _add_list(vol, volume_list)
    _verb(vol, "get", volume_get, "show a volume", positional="NAME")
    p = _verb(vol, "attach", volume_attach, "attach to an instance", positional="NAME", etag=True)
    p.add_argument("instance")
    _verb(vol, "detach", volume_detach, "detach", positional="NAME", etag=True)
    p = _verb(vol, "resize", volume_resize, "grow", positional="NAME", etag=True)
    p.add_argument("--size-gib", type=int, required=True)
    _verb(vol, "delete", _delete("DeleteVolume"), "delete", positional="NAME", etag=True)

    # vpc / subnet
    vpc = nouns.add_parser("vpc", help="VPCs (tenant)").add_subparsers(dest="verb", required=True)
    p = _verb(vpc, "create", vpc_create, "create a VPC", request_id=True)
    p.add_argument("--name", default="")
    p.add_argument("--cidr", required=True)
    _add_list(vpc, vpc_list)
    subnet = nouns.add_parser("subnet", help="subnets (tenant)").add_subparsers(
        dest="verb", required=True
    )
    p = _verb(subnet, "create", subnet_create, "create a subnet", request_id=True)
    p.add_argument("--vpc", required=True, help="tenants/T/vpcs/V")
    p.add_argument("--name", default="")
    p.add_argument("--cidr", required=True)
    p.add_argument("--zone", default="")
    _add_list(subnet, subnet_list)
    _verb(vpc, "delete", _delete("DeleteVpc"), "delete", positional="NAME", etag=True)
    _verb(subnet, "delete", _delete("DeleteSubnet"), "delete", positional="NAME", etag=True)

    # network interfaces
    nic = nouns.add_parser("nic", help="network interfaces (tenant)").add_subparsers(
        dest="verb", required=True
    )
    p = _verb(nic, "create", nic_create, "create an interface in a subnet", request_id=True)
    p.add_argument("--subnet", required=True)
    p.add_argument("--name", default="")
    _add_list(nic, nic_list)
    p = _verb(nic, "attach", nic_attach, "attach to an instance", positional="NAME", etag=True)
    p.add_argument("instance")
    _verb(nic, "detach", nic_detach, "detach", positional="NAME", etag=True)
    _verb(nic, "delete", _delete("DeleteNetworkInterface"), "delete", positional="NAME", etag=True)

    # placement groups
    group = nouns.add_parser("placement-group", help="spread groups (tenant)").add_subparsers(
        dest="verb", required=True
    )
    p = _verb(group, "create", group_create, "create a rack-spread group", request_id=True)
    p.add_argument("--name", default="")
    _add_list(group, group_list)
    _verb(group, "delete", _delete("DeletePlacementGroup"), "delete", positional="NAME", etag=True)
