"""Validation helpers for request fields; each raises ``InvalidArgument``
with a message naming the field, so the API can answer INVALID_ARGUMENT
verbatim.

Ids follow RFC 1123 labels (``[a-z]([-a-z0-9]{0,61}[a-z0-9])?``, as AIP-122
recommends); CIDRs are IPv4 or IPv6 networks with host bits clear.
"""

from __future__ import annotations

import ipaddress
import re

from control_plane.domain.errors import InvalidArgument

ID_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][-_.A-Za-z0-9]{0,127}$")

MAX_USER_DATA_BYTES = 16 * 1024
MAX_SSH_KEYS = 16
MAX_SSH_KEY_LEN = 8 * 1024
MAX_DESCRIPTION_LEN = 1024
MAX_VOLUME_GIB = 64 * 1024
MAX_VOLUMES_PER_INSTANCE = 16
#: volume QoS ceilings (0 = unlimited): far above any one device, below uint32
MAX_VOLUME_IOPS = 10_000_000
MAX_VOLUME_MBPS = 1_000_000
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


def validate_id(value: str, *, what: str = "id") -> str:
    if not ID_RE.fullmatch(value):
        raise InvalidArgument(
            f"{what}: {value!r} must match [a-z]([-a-z0-9]{{0,61}}[a-z0-9])? (RFC 1123 label)"
        )
    return value


def validate_request_id(value: str) -> str:
    if not REQUEST_ID_RE.fullmatch(value):
        raise InvalidArgument(f"request_id: {value!r} must be 1-128 chars of [-_.A-Za-z0-9]")
    return value


def validate_length(value: str, *, field: str, max_len: int, min_len: int = 0) -> str:
    if not min_len <= len(value) <= max_len:
        raise InvalidArgument(f"{field}: length {len(value)} not in [{min_len}, {max_len}]")
    return value


def validate_range(value: int, *, field: str, min_value: int, max_value: int) -> int:
    if not min_value <= value <= max_value:
        raise InvalidArgument(f"{field}: {value} not in [{min_value}, {max_value}]")
    return value


def validate_volume_size(size_gib: int) -> int:
    return validate_range(size_gib, field="size_gib", min_value=1, max_value=MAX_VOLUME_GIB)


def validate_volume_qos(max_iops: int, max_mbps: int, *, prefix: str = "") -> tuple[int, int]:
    """A volume's IOPS and MB/s limits (0 = unlimited)."""
    return (
        validate_range(max_iops, field=f"{prefix}max_iops", min_value=0, max_value=MAX_VOLUME_IOPS),
        validate_range(max_mbps, field=f"{prefix}max_mbps", min_value=0, max_value=MAX_VOLUME_MBPS),
    )


def validate_user_data(data: bytes | str) -> None:
    size = len(data.encode() if isinstance(data, str) else data)
    if size > MAX_USER_DATA_BYTES:
        raise InvalidArgument(f"user_data: {size} bytes exceeds {MAX_USER_DATA_BYTES}")


def validate_ssh_keys(keys: tuple[str, ...] | list[str]) -> None:
    if len(keys) > MAX_SSH_KEYS:
        raise InvalidArgument(f"ssh_keys: at most {MAX_SSH_KEYS} keys")
    for i, key in enumerate(keys):
        validate_length(key, field=f"ssh_keys[{i}]", min_len=1, max_len=MAX_SSH_KEY_LEN)
        if not key.startswith(("ssh-", "ecdsa-", "sk-")):
            raise InvalidArgument(f"ssh_keys[{i}]: not an OpenSSH public key")


def parse_cidr(cidr: str, *, field: str = "cidr") -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise InvalidArgument(f"{field}: {cidr!r} is not a network CIDR ({exc})") from exc


def validate_subnet_cidr(subnet_cidr: str, vpc_cidr: str) -> None:
    """The subnet CIDR must be a valid network inside the VPC's CIDR."""
    sub = parse_cidr(subnet_cidr, field="subnet.cidr")
    vpc = parse_cidr(vpc_cidr, field="vpc.cidr")
    if sub.version != vpc.version or not sub.subnet_of(vpc):  # type: ignore[arg-type]
        raise InvalidArgument(f"subnet.cidr: {subnet_cidr} is not inside VPC CIDR {vpc_cidr}")


def validate_page_size(page_size: int) -> int:
    """0 means the default; negative is invalid; large values are clamped."""
    if page_size < 0:
        raise InvalidArgument("page_size: must be >= 0")
    if page_size == 0:
        return DEFAULT_PAGE_SIZE
    return min(page_size, MAX_PAGE_SIZE)
