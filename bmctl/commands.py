"""The ``bmctl <noun> <verb>`` command table.

Each verb is a small function ``(client, args) -> Result``: it builds one
request message from parsed arguments, makes one RPC (list verbs follow
``next_page_token`` until ``--limit`` rows or the end), optionally waits
(``--wait``) for the resource to settle, and returns the messages to print
with the noun's column spec (``bmctl.columns``).  ``bmctl.parser`` declares
every noun/verb and its flags with argparse and stores the verb function as
the parser default ``func``.  ``config`` and ``completion`` (local, no
server) live in ``bmctl.local``.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from bmaas.v1 import common_pb2, operator_pb2, tenant_pb2
from bmctl import exitcodes
from bmctl.client import Client, CliError
from bmctl.columns import (
    ENROLLED_COLUMNS,
    GROUP_COLUMNS,
    HOST_COLUMNS,
    IMAGE_COLUMNS,
    INSTANCE_COLUMNS,
    NIC_COLUMNS,
    QUOTA_COLUMNS,
    SUBNET_COLUMNS,
    TENANT_COLUMNS,
    TOKEN_COLUMNS,
    TOKEN_INFO_COLUMNS,
    TYPE_COLUMNS,
    VOLUME_COLUMNS,
    VPC_COLUMNS,
)
from bmctl.output import Column, enum_name
from bmctl.wait import Goal, wait_for


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
    result = _one(resp, ENROLLED_COLUMNS)
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


def host_action(method: str) -> Verb:
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
        tenant=_qualify("tenants", args.tenant), request_id=_request_id(args), ttl_seconds=args.ttl
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


def token_list(client: Client, args: argparse.Namespace) -> Result:
    req = operator_pb2.ListTenantTokensRequest(tenant=_qualify("tenants", args.tenant))
    resp = client.call("operator", "ListTenantTokens", req)
    assert isinstance(resp, operator_pb2.ListTenantTokensResponse)
    return Result(list(resp.tokens), TOKEN_INFO_COLUMNS)


def token_revoke(client: Client, args: argparse.Namespace) -> Result:
    req = operator_pb2.RevokeTenantTokenRequest(
        tenant=_qualify("tenants", args.tenant), token_id=args.token_id
    )
    return _one(client.call("operator", "RevokeTenantToken", req), TOKEN_INFO_COLUMNS)


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
        metadata_tokens=common_pb2.MetadataTokens.Value(
            f"METADATA_TOKENS_{args.metadata_tokens.upper()}"
        ),
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


def instance_action(method: str, target: int | None) -> Verb:
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


def getter(method: str, columns: Sequence[Column]) -> Verb:
    def run(client: Client, args: argparse.Namespace) -> Result:
        return _one(client.call("tenant", method, tenant_pb2.GetRequest(name=args.name)), columns)

    return run


def deleter(method: str) -> Verb:
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
