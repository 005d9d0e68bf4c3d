"""``offload-net --metadata FILE.json``: the instance metadata file, read strictly.

The file is one JSON object with these keys, every one optional::

    instance_id   string            default "i-" + the MAC without colons
    hostname      string            default the instance id
    public_keys   list of strings   default none
    user_data     string            default none (user-data answers 404)

Anything else is refused, never ignored: an unknown key (a typo such as
``instance-id`` would otherwise serve a made-up instance id), a value of
the wrong type (``true`` is not a string, ``1`` is not a string), a file
that is not a JSON object.  ``load_metadata`` raises ``InvalidMetadataFile``
with one line naming the file and the first problem; the CLI prints it and
changes nothing.  The NIC's address and MAC come from the command line,
not from the file.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Interface
from pathlib import Path

from offload.network.errors import InvalidMetadataFile
from offload.network.metadata import InstanceMetadata

__all__ = ["KEYS", "load_metadata"]

#: every key the file may have, and the JSON type its value must be
KEYS: dict[str, str] = {
    "instance_id": "a string",
    "hostname": "a string",
    "public_keys": "a list of strings",
    "user_data": "a string",
}


def _is(value: object, kind: str) -> bool:
    if kind == "a string":
        return isinstance(value, str)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def load_metadata(path: str | Path, *, mac: str, ip: IPv4Interface) -> InstanceMetadata:
    """The metadata in *path* for the NIC *mac* / *ip*; ``InvalidMetadataFile`` if it is not."""
    where = f"metadata {path}"
    try:
        raw = json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise InvalidMetadataFile(f"{where}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidMetadataFile(f"{where}: not JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise InvalidMetadataFile(f"{where}: not a JSON object")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        known = ", ".join(KEYS)
        raise InvalidMetadataFile(f"{where}: unknown key {unknown[0]!r} (known: {known})")
    for key, kind in KEYS.items():
        if key in raw and not _is(raw[key], kind):
            got = type(raw[key]).__name__
            raise InvalidMetadataFile(f"{where}: {key} must be {kind}, not {got}")
    instance_id: str = raw.get("instance_id", "i-" + mac.replace(":", ""))
    user_data: str | None = raw.get("user_data")
    return InstanceMetadata(
        instance_id=instance_id,
        hostname=raw.get("hostname", instance_id),
        local_ipv4=str(ip.ip),
        mac=mac,
        public_keys=tuple(raw.get("public_keys", ())),
        user_data=None if user_data is None else user_data.encode(),
    )
