"""The ``bmctl`` command tree: every noun, verb and flag, declared with argparse.

``register(subparsers)`` adds the API nouns; each verb parser stores its
function from ``bmctl.commands`` as the default ``func``.  Flags take the
proto field names (``--instance-type``, ``--size-gib``, ``--page-size``);
the argument types here refuse what the wire cannot carry (negative or too
large integers, non-positive seconds) as usage errors.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

from bmaas.v1 import common_pb2
from bmctl import commands as c
from bmctl.columns import GROUP_COLUMNS, NIC_COLUMNS, SUBNET_COLUMNS, VPC_COLUMNS

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
#: power drivers the control plane accepts (``Host.power_driver``)
POWER_DRIVERS = ("qemu", "fake")
DEFAULT_WAIT_TIMEOUT = 300.0


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


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> int:
    """Whole seconds from ``3600``, ``90m``, ``12h`` or ``30d``."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    if not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 3600, 90m, 12h or 30d, got {text!r}"
        )
    return int(number) * _UNITS[unit]


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


# --- argparse wiring ---------------------------------------------------------------------


def _noun(nouns: SubParsers, name: str, help_: str) -> SubParsers:
    parser = nouns.add_parser(name, help=help_, description=help_)
    verbs: SubParsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    return verbs


def _verb(
    sub: SubParsers,
    name: str,
    func: c.Verb,
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


def _add_list(sub: SubParsers, func: c.Verb, what: str, *, operator: bool = False) -> None:
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
        c.host_enroll,
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
    _add_list(host, c.host_list, "hosts")
    _verb(host, "get", c.host_get, "show a host", positional="NAME")
    for verb, method, text in (
        ("cordon", "CordonHost", "no new placements on the host"),
        ("uncordon", "UncordonHost", "allow placements again"),
        ("drain", "DrainHost", "cordon and terminate the bound instance"),
        ("decommission", "DecommissionHost", "retire the host for good (ENROLLED or MAINTENANCE)"),
    ):
        p = _verb(
            host,
            verb,
            c.host_action(method),
            text,
            positional="NAME",
            etag=True,
            wait=verb == "drain",
        )
        p.add_argument("--reason", default="")
    p = _verb(
        host,
        "maintenance",
        c.host_maintenance,
        "request maintenance (on) or end it (off)",
        positional="NAME",
        etag=True,
        wait=True,
    )
    p.add_argument("state", choices=["on", "off"])
    p.add_argument("--reason", default="")

    # tenant, token, quota (operator)
    tenant = _noun(nouns, "tenant", "tenants (operator)")
    p = _verb(tenant, "create", c.tenant_create, "create a tenant", request_id=True)
    p.add_argument("--id", default="", help="tenant id or tenants/ID (default: server-generated)")
    p.add_argument("--display-name", default="")
    p.add_argument("--max-instances", type=uint32, default=10)
    p.add_argument("--max-volume-gib", type=uint64, default=10240)
    _add_list(tenant, c.tenant_list, "tenants")
    _verb(tenant, "get", c.tenant_get, "show a tenant", positional="NAME")

    token = _noun(nouns, "token", "tenant bearer tokens (operator)")
    p = _verb(token, "issue", c.token_issue, "issue a bearer token (shown once)", request_id=True)
    p.add_argument("tenant", metavar="TENANT")
    p.add_argument(
        "--ttl",
        type=duration,
        default=0,
        metavar="DURATION",
        help="lifetime: SECONDS or a number with s, m, h or d (default 30d, at most 365d)",
    )
    p = _verb(token, "list", c.token_list, "a tenant's tokens: expiry, last use (no secrets)")
    p.add_argument("tenant", metavar="TENANT")
    p = _verb(token, "revoke", c.token_revoke, "revoke a token (refused everywhere within 1 s)")
    p.add_argument("tenant", metavar="TENANT")
    p.add_argument("token_id", metavar="TOKEN_ID")

    quota = _noun(nouns, "quota", "tenant quotas and usage (operator)")
    p = _verb(quota, "get", c.quota_get, "show a tenant's quota and usage")
    p.add_argument("tenant", metavar="TENANT")
    p = _verb(
        quota, "set", c.quota_set, "replace a tenant's quota (unset limits are kept)", etag=True
    )
    p.add_argument("tenant", metavar="TENANT")
    p.add_argument("--max-instances", type=uint32, default=None)
    p.add_argument("--max-volume-gib", type=uint64, default=None)

    # catalogue
    itype = _noun(nouns, "instance-type", "instance types")
    p = _verb(itype, "create", c.type_create, "create an instance type (operator)", request_id=True)
    p.add_argument("id", metavar="ID", help="type id or instanceTypes/ID")
    p.add_argument("--host-class", required=True)
    p.add_argument("--cpus", type=uint32, required=True)
    p.add_argument("--memory-gib", type=uint32, required=True)
    p.add_argument("--description", default="")
    _add_list(itype, c.type_list, "instance types", operator=True)

    image = _noun(nouns, "image", "boot images")
    p = _verb(image, "register", c.image_register, "register an image (operator)", request_id=True)
    p.add_argument("id", metavar="ID", help="image id or images/ID")
    p.add_argument("--source-uri", required=True)
    p.add_argument("--os", default="linux")
    p.add_argument("--size-gib", type=uint32, default=10)
    p.add_argument("--display-name", default="")
    p.add_argument("--checksum", default="", help="sha256:<hex>")
    _add_list(image, c.image_list, "images", operator=True)

    # instance (tenant)
    inst = _noun(nouns, "instance", "instances: one whole host each (tenant)")
    p = _verb(inst, "create", c.instance_create, "rent a whole host", request_id=True, wait=True)
    p.add_argument("--name", default="", help="full name (default: server-generated)")
    p.add_argument("--instance-type", "--type", required=True, help="type id or instanceTypes/ID")
    p.add_argument("--image", required=True, help="image id or images/ID")
    p.add_argument(
        "--subnet",
        default="",
        help="create the primary network interface in this subnet with the instance "
        "(deleted with it unless detached first)",
    )
    p.add_argument("--volume", action="append", default=[], help="data volume (repeatable)")
    p.add_argument("--ssh-key", action="append", default=[], help="public key text (repeatable)")
    p.add_argument("--ssh-key-file", action="append", default=[], help="repeatable")
    p.add_argument("--user-data-file", default="")
    p.add_argument("--placement-group", default="")
    p.add_argument("--zone", default="")
    p.add_argument(
        "--metadata-tokens",
        choices=["required", "optional"],
        default="required",
        help="metadata service: IMDSv2 session tokens required (default) or optional (IMDSv1 too)",
    )
    _add_list(inst, c.instance_list, "instances")
    _verb(inst, "get", c.instance_get, "show an instance", positional="NAME")
    for verb, method, target in (
        ("start", "StartInstance", common_pb2.INSTANCE_STATE_RUNNING),
        ("stop", "StopInstance", common_pb2.INSTANCE_STATE_STOPPED),
        ("reboot", "RebootInstance", common_pb2.INSTANCE_STATE_RUNNING),
        ("terminate", "TerminateInstance", None),
    ):
        _verb(
            inst,
            verb,
            c.instance_action(method, target),
            f"{verb} an instance",
            positional="NAME",
            etag=True,
            request_id=True,
            wait=True,
        )
    p = _verb(inst, "console", c.instance_console, "serial console tail", positional="NAME")
    p.add_argument("--max-bytes", type=uint32, default=0, help="0 = 64 KiB")

    # volume (tenant)
    vol = _noun(nouns, "volume", "cloud disks (tenant)")
    p = _verb(vol, "create", c.volume_create, "create a volume", request_id=True, wait=True)
    p.add_argument("--name", default="")
    p.add_argument("--size-gib", type=uint64, required=True)
    p.add_argument("--zone", default="")
    p.add_argument("--image", default="", help="clone this image")
    _add_list(vol, c.volume_list, "volumes")
    _verb(vol, "get", c.volume_get, "show a volume", positional="NAME")
    p = _verb(
        vol,
        "attach",
        c.volume_attach,
        "attach to an instance",
        positional="NAME",
        etag=True,
        wait=True,
    )
    p.add_argument("instance", metavar="INSTANCE")
    _verb(vol, "detach", c.volume_detach, "detach", positional="NAME", etag=True, wait=True)
    p = _verb(vol, "resize", c.volume_resize, "grow", positional="NAME", etag=True, wait=True)
    p.add_argument("--size-gib", type=uint64, required=True)
    _verb(vol, "delete", c.volume_delete, "delete", positional="NAME", etag=True, wait=True)

    # vpc / subnet / nic (tenant)
    vpc = _noun(nouns, "vpc", "VPCs (tenant)")
    p = _verb(vpc, "create", c.vpc_create, "create a VPC", request_id=True)
    p.add_argument("--name", default="")
    p.add_argument("--cidr", required=True)
    _add_list(vpc, c.vpc_list, "VPCs")
    _verb(vpc, "get", c.getter("GetVpc", VPC_COLUMNS), "show a VPC", positional="NAME")
    _verb(vpc, "delete", c.deleter("DeleteVpc"), "delete", positional="NAME", etag=True)

    subnet = _noun(nouns, "subnet", "subnets (tenant)")
    p = _verb(subnet, "create", c.subnet_create, "create a subnet", request_id=True)
    p.add_argument("--vpc", "--parent", required=True, help="tenants/T/vpcs/V")
    p.add_argument("--name", default="")
    p.add_argument("--cidr", required=True)
    p.add_argument("--zone", default="")
    _add_list(subnet, c.subnet_list, "subnets")
    _verb(subnet, "get", c.getter("GetSubnet", SUBNET_COLUMNS), "show a subnet", positional="NAME")
    _verb(subnet, "delete", c.deleter("DeleteSubnet"), "delete", positional="NAME", etag=True)

    nic = _noun(nouns, "nic", "network interfaces (tenant)")
    p = _verb(nic, "create", c.nic_create, "create an interface in a subnet", request_id=True)
    p.add_argument("--subnet", required=True)
    p.add_argument("--name", default="")
    _add_list(nic, c.nic_list, "network interfaces")
    _verb(
        nic,
        "get",
        c.getter("GetNetworkInterface", NIC_COLUMNS),
        "show an interface",
        positional="NAME",
    )
    p = _verb(nic, "attach", c.nic_attach, "attach to an instance", positional="NAME", etag=True)
    p.add_argument("instance", metavar="INSTANCE")
    _verb(nic, "detach", c.nic_detach, "detach", positional="NAME", etag=True)
    _verb(
        nic, "delete", c.deleter("DeleteNetworkInterface"), "delete", positional="NAME", etag=True
    )

    # placement groups (tenant)
    group = _noun(nouns, "placement-group", "rack-spread placement groups (tenant)")
    p = _verb(group, "create", c.group_create, "create a placement group", request_id=True)
    p.add_argument("--name", default="")
    p.add_argument("--strategy", default="SPREAD_RACKS", choices=["SPREAD_RACKS"])
    _add_list(group, c.group_list, "placement groups")
    _verb(
        group,
        "get",
        c.getter("GetPlacementGroup", GROUP_COLUMNS),
        "show a placement group",
        positional="NAME",
    )
    _verb(
        group, "delete", c.deleter("DeletePlacementGroup"), "delete", positional="NAME", etag=True
    )
