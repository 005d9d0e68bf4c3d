"""Request validation: every field is checked before anything is written.

Helpers take the raw protobuf value plus the field path to report
(``instance.image``) and return a clean Python value or raise
``InvalidField`` (INVALID_ARGUMENT with a ``BadRequest`` field violation).
Domain validators (``control_plane.domain.validation``) are reused and their
``InvalidArgument`` is re-raised as ``InvalidField`` on the request's own
field path, so a client always learns *which* field was wrong.

A message quotes a request value only through ``errors.shown`` (bounded,
with an ellipsis), so no error echoes unbounded input; ``errors.to_status``
caps the totals.

Names of tenant resources are checked for ownership here: a well-formed name
of another tenant raises ``NotFound`` (``MissingResource``) (never PERMISSION_DENIED, so a tenant
cannot probe for other tenants' resources).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

from google.protobuf.message import Message

from bmaas.v1 import common_pb2
from control_plane.api import convert
from control_plane.api.errors import InvalidField, MissingResource, clip, shown
from control_plane.domain import validation as dv
from control_plane.domain.errors import InvalidArgument
from control_plane.domain.host import HardwareProfile
from control_plane.domain.names import ResourceName, parse_name

MAX_NAME_LEN = 512
MAX_TEXT_LEN = dv.MAX_DESCRIPTION_LEN
MAX_URI_LEN = 2048
MAX_VOLUMES_PER_INSTANCE = dv.MAX_VOLUMES_PER_INSTANCE
MAX_CPUS = 4096
MAX_MEMORY_GIB = 64 * 1024
MAX_DISKS = 64
MAX_DISK_GIB = 1024 * 1024
MAX_NICS = 16


def required(value: str, field: str) -> str:
    if not value:
        raise InvalidField(field, "is required")
    return value


def text(value: str, field: str, *, max_len: int = MAX_TEXT_LEN, required_: bool = False) -> str:
    if required_:
        required(value, field)
    if len(value) > max_len:
        raise InvalidField(field, f"is {len(value)} characters long; the limit is {max_len}")
    if any(ord(c) < 0x20 and c not in "\t\n" for c in value):
        raise InvalidField(field, "contains control characters")
    return value


def ident(value: str, field: str, *, required_: bool = True) -> str:
    """An RFC 1123 label (zones, racks, host classes, ids)."""
    if not value and not required_:
        return value
    required(value, field)
    text(value, field, max_len=63)
    try:
        return dv.validate_id(value, what=field)
    except InvalidArgument as exc:
        raise InvalidField(field, "must be a lowercase RFC 1123 label like 'rack-1'") from exc


def int_range(value: int, field: str, lo: int, hi: int) -> int:
    if not lo <= value <= hi:
        raise InvalidField(field, f"{value} is out of range [{lo}, {hi}]")
    return value


def name(value: str, field: str, collection: str) -> ResourceName:
    """A well-formed name of *collection* (any owner)."""
    required(value, field)
    text(value, field, max_len=MAX_NAME_LEN)
    try:
        return parse_name(value, collection=collection)
    except InvalidArgument as exc:
        raise InvalidField(
            field, f"{shown(value)} is not a valid {collection} name ({clip(str(exc))})"
        ) from exc


def owned(value: str, field: str, collection: str, tenant: str) -> ResourceName:
    """A name of *collection* that belongs to *tenant*; NotFound for another tenant's."""
    rn = name(value, field, collection)
    if rn.tenant != tenant:
        raise MissingResource(value, field=field)
    return rn


def request_id(value: str) -> str:
    if not value:
        return ""
    try:
        return dv.validate_request_id(value)
    except InvalidArgument as exc:
        raise InvalidField("request_id", "must be 1-128 characters of [-_.A-Za-z0-9]") from exc


def etag(value: str, field: str = "etag") -> str:
    if value and (not value.isdigit() or len(value) > 20 or int(value) <= 0):
        raise InvalidField(field, f"{shown(value, 24)} is not an etag returned by this API")
    return value


def page(page_size: int, page_token: str, filter_: str) -> tuple[int, str, str]:
    if page_size < 0:
        raise InvalidField("page_size", "must be >= 0")
    text(page_token, "page_token", max_len=4096)
    text(filter_, "filter", max_len=MAX_TEXT_LEN)
    return min(page_size, dv.MAX_PAGE_SIZE), page_token, filter_


def cidr(value: str, field: str, *, min_prefix: int = 8, max_prefix: int = 29) -> str:
    required(value, field)
    text(value, field, max_len=64)
    try:
        net = dv.parse_cidr(value, field=field)
    except InvalidArgument as exc:
        raise InvalidField(
            field, f"{shown(value)} is not a network CIDR with host bits clear"
        ) from exc
    if net.version != 4:
        raise InvalidField(field, "only IPv4 networks are supported")
    if not min_prefix <= net.prefixlen <= max_prefix:
        raise InvalidField(field, f"prefix length must be between /{min_prefix} and /{max_prefix}")
    if not net.is_private:
        raise InvalidField(field, f"{value} is not a private (RFC 1918) range")
    return str(net)


def user_data(value: str, field: str) -> str:
    size = len(value.encode())
    if size > dv.MAX_USER_DATA_BYTES:
        raise InvalidField(field, f"is {size} bytes; the limit is {dv.MAX_USER_DATA_BYTES}")
    return value


def ssh_keys(values: Sequence[str], field: str) -> tuple[str, ...]:
    if len(values) > dv.MAX_SSH_KEYS:
        raise InvalidField(field, f"at most {dv.MAX_SSH_KEYS} keys")
    for i, key in enumerate(values):
        path = f"{field}[{i}]"
        text(key, path, max_len=dv.MAX_SSH_KEY_LEN, required_=True)
        if not key.startswith(("ssh-", "ecdsa-", "sk-")) or len(key.split()) < 2:
            raise InvalidField(path, "is not an OpenSSH public key ('ssh-ed25519 AAAA...')")
    return tuple(values)


def hardware(
    msg: common_pb2.HardwareProfile, field: str, *, sizes_optional: bool = False
) -> HardwareProfile:
    """A host's hardware profile; with *sizes_optional* (an agent's report)
    0 CPUs / 0 GiB mean "not detected", the disks and NICs are checked alike."""
    lo = 0 if sizes_optional else 1
    int_range(msg.cpus, f"{field}.cpus", lo, MAX_CPUS)
    int_range(msg.memory_gib, f"{field}.memory_gib", lo, MAX_MEMORY_GIB)
    if len(msg.disks) > MAX_DISKS:
        raise InvalidField(f"{field}.disks", f"at most {MAX_DISKS} disks")
    if len(msg.nics) > MAX_NICS:
        raise InvalidField(f"{field}.nics", f"at most {MAX_NICS} NICs")
    for i, d in enumerate(msg.disks):
        text(d.name, f"{field}.disks[{i}].name", max_len=32, required_=True)
        int_range(d.size_gib, f"{field}.disks[{i}].size_gib", 1, MAX_DISK_GIB)
        text(d.kind, f"{field}.disks[{i}].kind", max_len=16)
    for i, n in enumerate(msg.nics):
        text(n.name, f"{field}.nics[{i}].name", max_len=32, required_=True)
        text(n.mac_address, f"{field}.nics[{i}].mac_address", max_len=17)
        int_range(n.speed_gbps, f"{field}.nics[{i}].speed_gbps", 0, 1600)
    return convert.hardware_from_pb(msg)


def new_id(prefix: str) -> str:
    """A fresh id like ``i-3fa2b1c9d04e`` (RFC 1123, 48 random bits)."""
    return f"{prefix}-{secrets.token_hex(6)}"


def derived_id(prefix: str, request_id_: str) -> str:
    """A deterministic id for a retried operator create (same request_id, same id)."""
    return f"{prefix}-{hashlib.sha256(request_id_.encode()).hexdigest()[:12]}"


def fingerprint(msg: Message) -> str:
    """A digest of the request without its request_id (detects a reused request_id)."""
    copy = type(msg)()
    copy.CopyFrom(msg)
    if "request_id" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:32]
