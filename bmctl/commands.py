"""The ``bmctl <noun> <verb>`` command table.

Each verb is a small function ``(client, args) -> Result``: it builds one
request message from parsed arguments, makes one RPC (list verbs follow
``next_page_token`` until ``--limit`` rows or the end), optionally waits
(``--wait``) for the resource to settle, and returns the messages to print
with the noun's column spec.  ``register(subparsers)`` declares every
noun/verb with argparse; the verb function is stored as the parser default
``func``.  Flags take the proto field names (``--instance-type``,
``--size-gib``, ``--page-size``).  ``config`` and ``completion`` (local, no
server) live in ``bmctl.local``.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from google.protobuf.message import Message

from bmaas.v1 import common_pb2, operator_pb2, tenant_pb2
from bmctl import exitcodes
from bmctl.client import Client, CliError
from bmctl.output import Column, enum_name
from bmctl.output import field as col
from bmctl.wait import Goal, wait_for

#: power drivers the control plane accepts (``Host.power_driver``)
POWER_DRIVERS = ("qemu", "fake")
DEFAULT_WAIT_TIMEOUT = 300.0


@dataclass
class Result:
    messages: list[Message]
    columns: Sequence[Column] = ()
    single: bool = False  # print one object (JSON object, not array)
    notes: list[str] = field(default_factory=list)  # printed after the table (stderr)
    text: str | None = None  # table-format output instead of a table of columns
    data: object = None  # json/yaml output instead of the messages
    plain: bool = False  # print ``text`` whatever the output format (scripts)


Verb = Callable[[Client, argparse.Namespace], Result]
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

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


# --- argument types ----------------------------------------------------------------------


def _uint(bits: int) -> Callable[[str], int]:
    top = (1 << bits) - 1

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not 0 <= value <= top:
            raise argparse.ArgumentTypeError(f"{value} is out of range 0..{top}")
        return value

    parse.__name__ = f"uint{bits}"
    return parse


uint32 = _uint(32)
uint64 = _uint(64)
int32 = _uint(31)  # page sizes: int32 on the wire, never negative


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


# --- helpers -----------------------------------------------------------------------------


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
    token = args.page_token
    notes: list[str] = []
    while True:
        req = tenant_pb2.ListRequest(page_size=args.page_size, page_token=token, filter=args.filter)
        resp = client.call(service, method, req)
        out.extend(getattr(resp, attr))
        token = getattr(resp, "next_page_token", "")
        if args.one_page:
            if token:
                notes.append(f"more results: --page-token {token}")
            break
        if not token or (args.limit and len(out) >= args.limit):
            break
    if args.limit:
        out = out[: args.limit]
    return Result(out, columns, notes=notes)


def _one(msg: Message, columns: Sequence[Column]) -> Result:
    return Result([msg], columns, single=True)


def _get(service: str, method: str, name: str) -> Callable[[Client, float], Message | None]:
    """A reader for ``--wait``: ``None`` once the resource is gone."""

    def read(client: Client, deadline: float) -> Message | None:
        try:
            return client.call(service, method, tenant_pb2.GetRequest(name=name), timeout=deadline)
        except CliError as err:
            if err.code == "NOT_FOUND":
                return None
            raise

    return read


def _state(msg: Message | None, field_name: str = "state") -> str:
    if msg is None:
        return "GONE"
    enum = msg.DESCRIPTOR.fields_by_name[field_name].enum_type
    assert enum is not None
    return enum_name(enum.name, enum.values_by_number[getattr(msg, field_name)].name)


def _wait(
    client: Client,
    args: argparse.Namespace,
    msg: Message,
    columns: Sequence[Column],
    goal: Goal,
) -> Result:
    if not args.wait:
        return _one(msg, columns)
    last = wait_for(
        goal, msg, timeout=args.wait_timeout, interval=0.5, call_timeout=args.request_timeout
    )
    if last is None:
        return Result([], notes=[f"{goal.name} is gone"])
    return _one(last, columns)


def _read_file(path: str, flag: str) -> str:
    try:
        return Path(path).expanduser().read_text()
    except OSError as exc:
        raise CliError(f"{flag} {path}: {exc.strerror}", exitcodes.USAGE) from exc
    except UnicodeDecodeError:
        raise CliError(f"{flag} {path}: not UTF-8 text", exitcodes.USAGE) from None


def _qualify(collection: str, value: str) -> str:
    return value if not value or "/" in value else f"{collection}/{value}"


# --- hosts -------------------------------------------------------------------------------


def host_enroll(client: Client, args: argparse.Namespace) -> Result:
    disks = [
        common_pb2.Disk(name=f"nvme{i}", size_gib=size, kind=args.disk_kind)
        for i, size in enumerate(args.disk_gib)
    ]
    nics = [common_pb2.Nic(name=f"eth{i}", speed_gbps=args.nic_gbps) for i in range(args.nics)]
    host = common_pb2.Host(
        name=_qualify("hosts", args.id),
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
    result = _one(
        resp,
        [
            ("NAME", col("host.name")),
            ("STATE", col("host.state")),
            ("DRIVER", col("host.power_driver")),
            ("AGENT CREDENTIAL", col("agent_credential")),
        ],
    )
    if resp.agent_credential:
        result.notes.append("the agent credential is shown once: store it on the host now")
    else:
        result.notes.append("already enrolled (retried --request-id): no credential to show")
    return result


def host_list(client: Client, args: argparse.Namespace) -> Result:
    return _list(client, "operator", "ListHosts", "hosts", args, HOST_COLUMNS)


def host_get(client: Client, args: argparse.Namespace) -> Result:
    req = tenant_pb2.GetRequest(name=_qualify("hosts", args.name))
    return _one(client.call("operator", "GetHost", req), HOST_COLUMNS)


def _host_goal(client: Client, name: str, target: str, done: Callable[[Any], bool]) -> Goal:
    read = _get("operator", "GetHost", name)
    return Goal(
        name=name,
        target=target,
        get=lambda t: read(client, t),
        done=lambda m: m is not None and done(m),
        state=_host_state,
    )


def _host_state(m: Any) -> str:
    return _state(m) + (f" (instance {m.instance})" if m is not None and m.instance else "")


def _drained(host: common_pb2.Host) -> bool:
    busy = (common_pb2.HOST_STATE_ALLOCATED, common_pb2.HOST_STATE_CLEANING)
    return not host.instance and host.state not in busy


def _host_action(method: str) -> Verb:
    def run(client: Client, args: argparse.Namespace) -> Result:
        name = _qualify("hosts", args.name)
        req = operator_pb2.HostActionRequest(name=name, etag=args.etag, reason=args.reason)
        host = client.call("operator", method, req)
        if method != "DrainHost":
            return _one(host, HOST_COLUMNS)
        goal = _host_goal(client, name, "drained (no instance, not cleaning)", _drained)
        return _wait(client, args, host, HOST_COLUMNS, goal)

    return run


def host_maintenance(client: Client, args: argparse.Namespace) -> Result:
    name = _qualify("hosts", args.name)
    on = args.state == "on"
    req = operator_pb2.SetHostMaintenanceRequest(
        name=name, maintenance=on, etag=args.etag, reason=args.reason
    )
    host = client.call("operator", "SetHostMaintenance", req)
    in_maintenance = common_pb2.HOST_STATE_MAINTENANCE
    if on:
        goal = _host_goal(client, name, "MAINTENANCE", lambda h: h.state == in_maintenance)
    else:
        settling = (in_maintenance, common_pb2.HOST_STATE_CLEANING)
        goal = _host_goal(
            client, name, "out of MAINTENANCE and CLEANING", lambda h: h.state not in settling
        )
    return _wait(client, args, host, HOST_COLUMNS, goal)


# --- tenants, tokens, quotas -------------------------------------------------------------


def tenant_create(client: Client, args: argparse.Namespace) -> Result:
    tenant = common_pb2.Tenant(
        name=_qualify("tenants", args.id),
        display_name=args.display_name,
        quota=common_pb2.Quota(
            max_instances=args.max_instances, max_volume_gib=args.max_volume_gib
        ),
    )
    req = operator_pb2.CreateTenantRequest(request_id=_request_id(args), tenant=tenant)
    return _one(client.call("operator", "CreateTenant", req), TENANT_COLUMNS)


def tenant_list(client: Client, args: argparse.Namespace) -> Result:
    return _list(client, "operator", "ListTenants", "tenants", args, TENANT_COLUMNS)


def _get_tenant(client: Client, name: str) -> common_pb2.Tenant:
    resp = client.call("operator", "GetTenant", tenant_pb2.GetRequest(name=name))
    assert isinstance(resp, common_pb2.Tenant)
    return resp


def tenant_get(client: Client, args: argparse.Namespace) -> Result:
    return _one(_get_tenant(client, _qualify("tenants", args.name)), TENANT_COLUMNS)


def token_issue(client: Client, args: argparse.Namespace) -> Result:
    req = operator_pb2.IssueTenantTokenRequest(
        tenant=_qualify("tenants", args.tenant), request_id=_request_id(args)
    )
    resp = client.call("operator", "IssueTenantToken", req)
    assert isinstance(resp, operator_pb2.IssueTenantTokenResponse)
    result = _one(resp, TOKEN_COLUMNS)
    if resp.replayed:
        result.notes.append(
            "this --request-id already issued a token: its secret is not shown again; "
            "issue a new one with another --request-id"
        )
    else:
        result.notes.append("the token is shown once: store it now")
    return result


def quota_get(client: Client, args: argparse.Namespace) -> Result:
    return _one(_get_tenant(client, _qualify("tenants", args.tenant)), QUOTA_COLUMNS)


def quota_set(client: Client, args: argparse.Namespace) -> Result:
    name = _qualify("tenants", args.tenant)
    if args.max_instances is None and args.max_volume_gib is None:
        raise CliError("quota set: give --max-instances and/or --max-volume-gib", exitcodes.USAGE)
    etag = args.etag
    quota = common_pb2.Quota(max_instances=args.max_instances or 0)
    quota.max_volume_gib = args.max_volume_gib or 0
    if args.max_instances is None or args.max_volume_gib is None:
        # keep the limit not given: read it, and replace only if nobody changed it since
        current = _get_tenant(client, name)
        etag = etag or current.etag
        if args.max_instances is None:
            quota.max_instances = current.quota.max_instances
        if args.max_volume_gib is None:
            quota.max_volume_gib = current.quota.max_volume_gib
    req = operator_pb2.SetTenantQuotaRequest(tenant=name, quota=quota, etag=etag)
    return _one(client.call("operator", "SetTenantQuota", req), QUOTA_COLUMNS)


# --- catalogue ---------------------------------------------------------------------------


def type_create(client: Client, args: argparse.Namespace) -> Result:
    itype = common_pb2.InstanceType(
        name=_qualify("instanceTypes", args.id),
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
        name=_qualify("images", args.id),
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

_INSTANCE_FAILED = common_pb2.INSTANCE_STATE_FAILED


def _instance_goal(client: Client, name: str, target: int | None) -> Goal:
    """Done at *target* (``None``: TERMINATED or gone); FAILED ends it with the reason."""
    read = _get("tenant", "GetInstance", name)
    terminated = common_pb2.INSTANCE_STATE_TERMINATED

    def done(m: Any) -> bool:
        if target is None:
            return m is None or m.state == terminated
        return m is not None and m.state == target

    def state(m: Any) -> str:
        text = _state(m)
        if m is not None and m.target_state and m.target_state != m.state:
            text += f" -> {_state(m, 'target_state')}"
        return text

    values = common_pb2.InstanceState.DESCRIPTOR.values_by_number
    want = "TERMINATED" if target is None else values[target].name
    return Goal(
        name=name,
        target=want.removeprefix("INSTANCE_STATE_"),
        get=lambda t: read(client, t),
        done=done,
        state=state,
        failed=lambda m: m.failure_reason if m.state == _INSTANCE_FAILED else None,  # type: ignore[attr-defined]
    )


def instance_create(client: Client, args: argparse.Namespace) -> Result:
    user_data = _read_file(args.user_data_file, "--user-data-file") if args.user_data_file else ""
    ssh_keys = [_read_file(p, "--ssh-key-file").strip() for p in args.ssh_key_file]
    inst = common_pb2.Instance(
        name=args.name,
        instance_type=_qualify("instanceTypes", args.instance_type),
        image=_qualify("images", args.image),
        subnet=args.subnet,
        volumes=args.volume,
        user_data=user_data,
        ssh_keys=[*args.ssh_key, *ssh_keys],
        placement_group=args.placement_group,
        zone=args.zone,
    )
    req = tenant_pb2.CreateInstanceRequest(request_id=_request_id(args), instance=inst)
    created = client.call("tenant", "CreateInstance", req)
    assert isinstance(created, common_pb2.Instance)
    goal = _instance_goal(client, created.name, common_pb2.INSTANCE_STATE_RUNNING)
    return _wait(client, args, created, INSTANCE_COLUMNS, goal)


def instance_list(client: Client, args: argparse.Namespace) -> Result:
    return _list(client, "tenant", "ListInstances", "instances", args, INSTANCE_COLUMNS)


def instance_get(client: Client, args: argparse.Namespace) -> Result:
    resp = client.call("tenant", "GetInstance", tenant_pb2.GetRequest(name=args.name))
    return _one(resp, INSTANCE_COLUMNS)


def _instance_action(method: str, target: int | None) -> Verb:
    def run(client: Client, args: argparse.Namespace) -> Result:
        req = tenant_pb2.InstanceActionRequest(
            name=args.name, etag=args.etag, request_id=_request_id(args)
        )
        inst = client.call("tenant", method, req)
        goal = _instance_goal(client, args.name, target)
        return _wait(client, args, inst, INSTANCE_COLUMNS, goal)

    return run


def instance_console(client: Client, args: argparse.Namespace) -> Result:
    req = tenant_pb2.GetConsoleOutputRequest(name=args.name, max_bytes=args.max_bytes)
    resp = client.call("tenant", "GetConsoleOutput", req)
    assert isinstance(resp, tenant_pb2.ConsoleOutput)
    text = resp.output.decode(errors="replace").rstrip("\n")
    return Result([resp], single=True, text=text)


# --- volumes -----------------------------------------------------------------------------

_VOLUME_SETTLED = (common_pb2.VOLUME_STATE_AVAILABLE, common_pb2.VOLUME_STATE_IN_USE)


def _volume_goal(
    client: Client, name: str, target: str, done: Callable[[Any], bool] | None
) -> Goal:
    """Done when *done* holds (``None``: when the volume is gone or DELETED)."""
    read = _get("tenant", "GetVolume", name)
    deleted = common_pb2.VOLUME_STATE_DELETED

    def finished(m: Any) -> bool:
        if done is None:
            return m is None or m.state == deleted
        return m is not None and done(m)

    error = common_pb2.VOLUME_STATE_ERROR
    return Goal(
        name=name,
        target=target,
        get=lambda t: read(client, t),
        done=finished,
        state=_volume_state,
        failed=lambda m: "the volume is in ERROR" if m.state == error else None,  # type: ignore[attr-defined]
    )


def _volume_state(m: Any) -> str:
    return _state(m) + (f" {m.size_gib} GiB" if m is not None else "")


def volume_create(client: Client, args: argparse.Namespace) -> Result:
    vol = common_pb2.Volume(
        name=args.name, size_gib=args.size_gib, zone=args.zone, image=_qualify("images", args.image)
    )
    req = tenant_pb2.CreateVolumeRequest(request_id=_request_id(args), volume=vol)
    created = client.call("tenant", "CreateVolume", req)
    assert isinstance(created, common_pb2.Volume)
    available = common_pb2.VOLUME_STATE_AVAILABLE
    goal = _volume_goal(client, created.name, "AVAILABLE", lambda v: v.state == available)
    return _wait(client, args, created, VOLUME_COLUMNS, goal)


def volume_list(client: Client, args: argparse.Namespace) -> Result:
    return _list(client, "tenant", "ListVolumes", "volumes", args, VOLUME_COLUMNS)


def volume_get(client: Client, args: argparse.Namespace) -> Result:
    resp = client.call("tenant", "GetVolume", tenant_pb2.GetRequest(name=args.name))
    return _one(resp, VOLUME_COLUMNS)


def volume_attach(client: Client, args: argparse.Namespace) -> Result:
    req = tenant_pb2.AttachVolumeRequest(name=args.name, instance=args.instance, etag=args.etag)
    vol = client.call("tenant", "AttachVolume", req)
    in_use = common_pb2.VOLUME_STATE_IN_USE
    goal = _volume_goal(client, args.name, "IN_USE", lambda v: v.state == in_use)
    return _wait(client, args, vol, VOLUME_COLUMNS, goal)


def volume_detach(client: Client, args: argparse.Namespace) -> Result:
    req = tenant_pb2.DetachVolumeRequest(name=args.name, etag=args.etag)
    vol = client.call("tenant", "DetachVolume", req)
    available = common_pb2.VOLUME_STATE_AVAILABLE
    goal = _volume_goal(client, args.name, "AVAILABLE", lambda v: v.state == available)
    return _wait(client, args, vol, VOLUME_COLUMNS, goal)


def volume_resize(client: Client, args: argparse.Namespace) -> Result:
    req = tenant_pb2.ResizeVolumeRequest(name=args.name, size_gib=args.size_gib, etag=args.etag)
    vol = client.call("tenant", "ResizeVolume", req)
    size = args.size_gib
    goal = _volume_goal(
        client,
        args.name,
        f"{size} GiB",
        lambda v: v.state in _VOLUME_SETTLED and v.size_gib >= size,
    )
    return _wait(client, args, vol, VOLUME_COLUMNS, goal)


def volume_delete(client: Client, args: argparse.Namespace) -> Result:
    client.call("tenant", "DeleteVolume", tenant_pb2.DeleteRequest(name=args.name, etag=args.etag))
    if args.wait:
        goal = _volume_goal(client, args.name, "deleted", None)
        wait_for(goal, goal.get(args.request_timeout), timeout=args.wait_timeout)
    return Result([], notes=[f"deleted {args.name}"])


# --- networking and placement ------------------------------------------------------------


def _getter(method: str, columns: Sequence[Column]) -> Verb:
    def run(client: Client, args: argparse.Namespace) -> Result:
        return _one(client.call("tenant", method, tenant_pb2.GetRequest(name=args.name)), columns)

    return run


def _delete(method: str) -> Verb:
    def run(client: Client, args: argparse.Namespace) -> Result:
        client.call("tenant", method, tenant_pb2.DeleteRequest(name=args.name, etag=args.etag))
        return Result([], notes=[f"deleted {args.name}"])

    return run


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
    strategy = common_pb2.PlacementStrategy.Value(f"PLACEMENT_STRATEGY_{args.strategy}")
    req = tenant_pb2.CreatePlacementGroupRequest(
        request_id=_request_id(args),
        placement_group=common_pb2.PlacementGroup(name=args.name, strategy=strategy),
    )
    return _one(client.call("tenant", "CreatePlacementGroup", req), GROUP_COLUMNS)


def group_list(client: Client, args: argparse.Namespace) -> Result:
    return _list(client, "tenant", "ListPlacementGroups", "placement_groups", args, GROUP_COLUMNS)


# --- argparse wiring ---------------------------------------------------------------------


def _noun(nouns: SubParsers, name: str, help_: str) -> SubParsers:
    parser = nouns.add_parser(name, help=help_, description=help_)
    verbs: SubParsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    return verbs


def _verb(
    sub: SubParsers,
    name: str,
    func: Verb,
    help_: str,
    *,
    positional: str | None = None,
    etag: bool = False,
    request_id: bool = False,
    wait: bool = False,
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
    if positional:
        p.add_argument("name", metavar=positional)
    if etag:
        p.add_argument("--etag", default="", help="fail with ABORTED if the resource changed")
    if request_id:
        p.add_argument("--request-id", default="", help="idempotency key (default: random)")
    if wait:
        p.add_argument(
            "--wait", action="store_true", help="wait until the operation is done, showing progress"
        )
        p.add_argument(
            "--timeout",
            dest="wait_timeout",
            type=seconds,
            default=DEFAULT_WAIT_TIMEOUT,
            metavar="SECONDS",
            help=f"give up waiting after SECONDS (exit 4; default {DEFAULT_WAIT_TIMEOUT:g})",
        )
    p.set_defaults(func=func)
    return p


def _add_list(sub: SubParsers, func: Verb, what: str, *, operator: bool = False) -> None:
    p = _verb(sub, "list", func, f"list {what} (follows every page unless --one-page)")
    p.add_argument("--filter", default="", help="e.g. 'state=RUNNING AND zone=z1'")
    p.add_argument(
        "--page-size", type=int32, default=0, help="rows per request (0 = server default)"
    )
    p.add_argument("--page-token", default="", help="start at this page (from --one-page)")
    p.add_argument(
        "--one-page", action="store_true", help="fetch one page; the next page token goes to stderr"
    )
    p.add_argument("--limit", type=uint32, default=0, help="stop after N rows (0 = all)")
    if operator:
        p.add_argument("--operator", action="store_true", help="use the operator service")


def register(nouns: SubParsers) -> None:
    # host (operator)
    host = _noun(nouns, "host", "physical hosts (operator)")
    p = _verb(
        host,
        "enroll",
        host_enroll,
        "enroll a host; prints its agent credential once",
        request_id=True,
    )
    p.add_argument("--id", default="", help="host id or hosts/ID (default: server-generated)")
    p.add_argument("--zone", required=True)
    p.add_argument("--rack", required=True)
    p.add_argument("--host-class", required=True)
    p.add_argument(
        "--power-driver",
        required=True,
        choices=POWER_DRIVERS,
        help="how the agent powers the server: qemu (a real server stand-in) or fake (tests)",
    )
    p.add_argument("--cpus", type=uint32, required=True)
    p.add_argument("--memory-gib", type=uint32, required=True)
    p.add_argument("--disk-gib", type=uint64, action="append", default=[], help="repeatable")
    p.add_argument("--disk-kind", default="nvme", choices=["nvme", "ssd", "hdd"])
    p.add_argument("--nics", type=uint32, default=1)
    p.add_argument("--nic-gbps", type=uint32, default=25)
    _add_list(host, host_list, "hosts")
    _verb(host, "get", host_get, "show a host", positional="NAME")
    for verb, method, text in (
        ("cordon", "CordonHost", "no new placements on the host"),
        ("uncordon", "UncordonHost", "allow placements again"),
        ("drain", "DrainHost", "cordon and terminate the bound instance"),
        ("decommission", "DecommissionHost", "retire the host for good (ENROLLED or MAINTENANCE)"),
    ):
        p = _verb(
            host,
            verb,
            _host_action(method),
            text,
            positional="NAME",
            etag=True,
            wait=verb == "drain",
        )
        p.add_argument("--reason", default="")
    p = _verb(
        host,
        "maintenance",
        host_maintenance,
        "request maintenance (on) or end it (off)",
        positional="NAME",
        etag=True,
        wait=True,
    )
    p.add_argument("state", choices=["on", "off"])
    p.add_argument("--reason", default="")

    # tenant, token, quota (operator)
    tenant = _noun(nouns, "tenant", "tenants (operator)")
    p = _verb(tenant, "create", tenant_create, "create a tenant", request_id=True)
    p.add_argument("--id", default="", help="tenant id or tenants/ID (default: server-generated)")
    p.add_argument("--display-name", default="")
    p.add_argument("--max-instances", type=uint32, default=10)
    p.add_argument("--max-volume-gib", type=uint64, default=10240)
    _add_list(tenant, tenant_list, "tenants")
    _verb(tenant, "get", tenant_get, "show a tenant", positional="NAME")

    token = _noun(nouns, "token", "tenant bearer tokens (operator)")
    p = _verb(token, "issue", token_issue, "issue a bearer token (shown once)", request_id=True)
    p.add_argument("tenant", metavar="TENANT")

    quota = _noun(nouns, "quota", "tenant quotas and usage (operator)")
    p = _verb(quota, "get", quota_get, "show a tenant's quota and usage")
    p.add_argument("tenant", metavar="TENANT")
    p = _verb(
        quota, "set", quota_set, "replace a tenant's quota (unset limits are kept)", etag=True
    )
    p.add_argument("tenant", metavar="TENANT")
    p.add_argument("--max-instances", type=uint32, default=None)
    p.add_argument("--max-volume-gib", type=uint64, default=None)

    # catalogue
    itype = _noun(nouns, "instance-type", "instance types")
    p = _verb(itype, "create", type_create, "create an instance type (operator)", request_id=True)
    p.add_argument("id", metavar="ID", help="type id or instanceTypes/ID")
    p.add_argument("--host-class", required=True)
    p.add_argument("--cpus", type=uint32, required=True)
    p.add_argument("--memory-gib", type=uint32, required=True)
    p.add_argument("--description", default="")
    _add_list(itype, type_list, "instance types", operator=True)

    image = _noun(nouns, "image", "boot images")
    p = _verb(image, "register", image_register, "register an image (operator)", request_id=True)
    p.add_argument("id", metavar="ID", help="image id or images/ID")
    p.add_argument("--source-uri", required=True)
    p.add_argument("--os", default="linux")
    p.add_argument("--size-gib", type=uint32, default=10)
    p.add_argument("--display-name", default="")
    p.add_argument("--checksum", default="", help="sha256:<hex>")
    _add_list(image, image_list, "images", operator=True)

    # instance (tenant)
    inst = _noun(nouns, "instance", "instances: one whole host each (tenant)")
    p = _verb(inst, "create", instance_create, "rent a whole host", request_id=True, wait=True)
    p.add_argument("--name", default="", help="full name (default: server-generated)")
    p.add_argument("--instance-type", "--type", required=True, help="type id or instanceTypes/ID")
    p.add_argument("--image", required=True, help="image id or images/ID")
    p.add_argument("--subnet", default="")
    p.add_argument("--volume", action="append", default=[], help="data volume (repeatable)")
    p.add_argument("--ssh-key", action="append", default=[], help="public key text (repeatable)")
    p.add_argument("--ssh-key-file", action="append", default=[], help="repeatable")
    p.add_argument("--user-data-file", default="")
    p.add_argument("--placement-group", default="")
    p.add_argument("--zone", default="")
    _add_list(inst, instance_list, "instances")
    _verb(inst, "get", instance_get, "show an instance", positional="NAME")
    for verb, method, target in (
        ("start", "StartInstance", common_pb2.INSTANCE_STATE_RUNNING),
        ("stop", "StopInstance", common_pb2.INSTANCE_STATE_STOPPED),
        ("reboot", "RebootInstance", common_pb2.INSTANCE_STATE_RUNNING),
        ("terminate", "TerminateInstance", None),
    ):
        _verb(
            inst,
            verb,
            _instance_action(method, target),
            f"{verb} an instance",
            positional="NAME",
            etag=True,
            request_id=True,
            wait=True,
        )
    p = _verb(inst, "console", instance_console, "serial console tail", positional="NAME")
    p.add_argument("--max-bytes", type=uint32, default=0, help="0 = 64 KiB")

    # volume (tenant)
    vol = _noun(nouns, "volume", "cloud disks (tenant)")
    p = _verb(vol, "create", volume_create, "create a volume", request_id=True, wait=True)
    p.add_argument("--name", default="")
    p.add_argument("--size-gib", type=uint64, required=True)
    p.add_argument("--zone", default="")
    p.add_argument("--image", default="", help="clone this image")
    _add_list(vol, volume_list, "volumes")
    _verb(vol, "get", volume_get, "show a volume", positional="NAME")
    p = _verb(
        vol,
        "attach",
        volume_attach,
        "attach to an instance",
        positional="NAME",
        etag=True,
        wait=True,
    )
    p.add_argument("instance", metavar="INSTANCE")
    _verb(vol, "detach", volume_detach, "detach", positional="NAME", etag=True, wait=True)
    p = _verb(vol, "resize", volume_resize, "grow", positional="NAME", etag=True, wait=True)
    p.add_argument("--size-gib", type=uint64, required=True)
    _verb(vol, "delete", volume_delete, "delete", positional="NAME", etag=True, wait=True)

    # vpc / subnet / nic (tenant)
    vpc = _noun(nouns, "vpc", "VPCs (tenant)")
    p = _verb(vpc, "create", vpc_create, "create a VPC", request_id=True)
    p.add_argument("--name", default="")
    p.add_argument("--cidr", required=True)
    _add_list(vpc, vpc_list, "VPCs")
    _verb(vpc, "get", _getter("GetVpc", VPC_COLUMNS), "show a VPC", positional="NAME")
    _verb(vpc, "delete", _delete("DeleteVpc"), "delete", positional="NAME", etag=True)

    subnet = _noun(nouns, "subnet", "subnets (tenant)")
    p = _verb(subnet, "create", subnet_create, "create a subnet", request_id=True)
    p.add_argument("--vpc", "--parent", required=True, help="tenants/T/vpcs/V")
    p.add_argument("--name", default="")
    p.add_argument("--cidr", required=True)
    p.add_argument("--zone", default="")
    _add_list(subnet, subnet_list, "subnets")
    _verb(subnet, "get", _getter("GetSubnet", SUBNET_COLUMNS), "show a subnet", positional="NAME")
    _verb(subnet, "delete", _delete("DeleteSubnet"), "delete", positional="NAME", etag=True)

    nic = _noun(nouns, "nic", "network interfaces (tenant)")
    p = _verb(nic, "create", nic_create, "create an interface in a subnet", request_id=True)
    p.add_argument("--subnet", required=True)
    p.add_argument("--name", default="")
    _add_list(nic, nic_list, "network interfaces")
    _verb(
        nic,
        "get",
        _getter("GetNetworkInterface", NIC_COLUMNS),
        "show an interface",
        positional="NAME",
    )
    p = _verb(nic, "attach", nic_attach, "attach to an instance", positional="NAME", etag=True)
    p.add_argument("instance", metavar="INSTANCE")
    _verb(nic, "detach", nic_detach, "detach", positional="NAME", etag=True)
    _verb(nic, "delete", _delete("DeleteNetworkInterface"), "delete", positional="NAME", etag=True)

    # placement groups (tenant)
    group = _noun(nouns, "placement-group", "rack-spread placement groups (tenant)")
    p = _verb(group, "create", group_create, "create a placement group", request_id=True)
    p.add_argument("--name", default="")
    p.add_argument("--strategy", default="SPREAD_RACKS", choices=["SPREAD_RACKS"])
    _add_list(group, group_list, "placement groups")
    _verb(
        group,
        "get",
        _getter("GetPlacementGroup", GROUP_COLUMNS),
        "show a placement group",
        positional="NAME",
    )
    _verb(group, "delete", _delete("DeletePlacementGroup"), "delete", positional="NAME", etag=True)
