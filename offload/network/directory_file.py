"""``offload-net --vpc-directory FILE.json``: the VPC directory, read strictly.

The host agent writes the file (and rewrites it, then sends ``SIGHUP``,
whenever the control plane's directory changes); ``offload-net`` reads it
at start and on every ``SIGHUP``.  One JSON object::

    {"vpc": "vpc-a",
     "neighbors": [{"ip": "10.20.2.5", "mac": "02:..", "subnet": "10.20.2.0/24",
                    "hostname": "i-1"}, ...]}

``vpc`` is the VPC's short name (the DNS zone label), every neighbor key is
required but ``hostname``.  An unknown key, a value of the wrong type, an
address outside its subnet, a MAC that is not unicast, or one address
listed twice is refused with ``InvalidDirectoryFile`` (one line naming the
file and the first problem); the CLI keeps serving the directory it had.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from offload.network import packets as pk
from offload.network.errors import InvalidDirectoryFile
from offload.network.router import Neighbor, VpcDirectory

__all__ = ["MAX_NEIGHBORS", "load_directory", "parse_directory"]

MAX_NEIGHBORS = 65536
_TOP = {"vpc", "neighbors"}
_NEIGHBOR = {"ip", "mac", "subnet", "hostname"}


def load_directory(path: str | Path) -> VpcDirectory:
    """The directory in *path*; ``InvalidDirectoryFile`` if it cannot be routed with."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidDirectoryFile(f"vpc directory {path}: {exc.strerror or exc}") from exc
    return parse_directory(data, where=f"vpc directory {path}")


def parse_directory(data: bytes, *, where: str = "vpc directory") -> VpcDirectory:
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise InvalidDirectoryFile(f"{where}: not JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise InvalidDirectoryFile(f"{where}: not a JSON object")
    for key in sorted(set(raw) - _TOP):
        raise InvalidDirectoryFile(f"{where}: unknown key {key!r} (known: vpc, neighbors)")
    vpc = raw.get("vpc", "")
    entries = raw.get("neighbors", [])
    if not isinstance(vpc, str) or not isinstance(entries, list):
        raise InvalidDirectoryFile(f"{where}: vpc must be a string, neighbors a list")
    if len(entries) > MAX_NEIGHBORS:
        raise InvalidDirectoryFile(f"{where}: more than {MAX_NEIGHBORS} neighbors")
    neighbors: list[Neighbor] = []
    seen: set[IPv4Address] = set()
    for i, entry in enumerate(entries):
        neighbor = _neighbor(entry, f"{where}: neighbors[{i}]")
        if neighbor.ip in seen:
            raise InvalidDirectoryFile(f"{where}: neighbors[{i}]: {neighbor.ip} listed twice")
        seen.add(neighbor.ip)
        neighbors.append(neighbor)
    return VpcDirectory(vpc=vpc, neighbors=tuple(neighbors))


def _neighbor(entry: object, where: str) -> Neighbor:
    if not isinstance(entry, dict):
        raise InvalidDirectoryFile(f"{where}: not a JSON object")
    for key in sorted(set(entry) - _NEIGHBOR):
        raise InvalidDirectoryFile(f"{where}: unknown key {key!r}")
    for key in sorted(_NEIGHBOR - {"hostname"} - set(entry)):
        raise InvalidDirectoryFile(f"{where}: missing {key!r}")
    if not all(isinstance(entry.get(k, ""), str) for k in _NEIGHBOR):
        raise InvalidDirectoryFile(f"{where}: every value must be a string")
    try:
        ip = IPv4Address(entry["ip"])
        subnet = IPv4Network(entry["subnet"])
        mac = pk.mac_bytes(entry["mac"])
    except ValueError as exc:
        raise InvalidDirectoryFile(f"{where}: {exc}") from exc
    if ip not in subnet:
        raise InvalidDirectoryFile(f"{where}: {ip} is not in {subnet}")
    if mac[0] & 1 or mac == bytes(6):
        raise InvalidDirectoryFile(f"{where}: {entry['mac']} is not a unicast MAC")
    return Neighbor(ip=ip, mac=entry["mac"], subnet=subnet, hostname=entry.get("hostname", ""))
