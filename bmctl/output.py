"""Rendering of API responses: aligned text tables (default), JSON or YAML.

A resource message is flattened to a row through a column spec
``(header, getter)``; JSON and YAML use the proto JSON mapping
(``MessageToDict`` with the proto field names, so scripts see the API's own
spelling: enums by full value name, 64-bit integers as strings, bytes as
base64).  Tables show enum values without their type prefix (``RUNNING``,
not ``INSTANCE_STATE_RUNNING``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import yaml
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

Column = tuple[str, Callable[[Message], object]]
FORMATS = ("table", "json", "yaml")


def field(path: str) -> Callable[[Message], object]:
    """A getter for a dotted field path; enums print as their short name."""

    def get(msg: Message) -> object:
        value: object = msg
        for part in path.split("."):
            parent = value
            value = getattr(value, part)
            if isinstance(parent, Message):
                fd = parent.DESCRIPTOR.fields_by_name.get(part)
                if fd is not None and fd.enum_type is not None and isinstance(value, int):
                    value = enum_name(fd.enum_type.name, fd.enum_type.values_by_number[value].name)
        if isinstance(value, Message):
            return ""
        if not isinstance(value, (str, bytes, int, float, bool)) and hasattr(value, "__iter__"):
            return ",".join(str(v) for v in value)
        return value

    return get


def enum_name(type_name: str, value_name: str) -> str:
    """``InstanceState``, ``INSTANCE_STATE_RUNNING`` -> ``RUNNING``."""
    return value_name.removeprefix(_enum_prefix(type_name))


def _enum_prefix(type_name: str) -> str:
    out = []
    for i, ch in enumerate(type_name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.upper())
    return "".join(out) + "_"


def to_data(value: object) -> object:
    """Messages (alone or in lists/dicts) as plain JSON-mapping data."""
    if isinstance(value, Message):
        return MessageToDict(value, preserving_proto_field_name=True)
    if isinstance(value, (list, tuple)):
        return [to_data(v) for v in value]
    if isinstance(value, dict):
        return {k: to_data(v) for k, v in value.items()}
    return value


def to_json(value: object) -> str:
    return json.dumps(to_data(value), indent=2, sort_keys=True)


def to_yaml(value: object) -> str:
    text: str = yaml.safe_dump(
        to_data(value), sort_keys=True, default_flow_style=False, allow_unicode=True
    )
    return text.rstrip("\n")


def table(rows: Sequence[Message], columns: Sequence[Column]) -> str:
    cells = [[h for h, _ in columns]]
    for row in rows:
        cells.append([_text(get(row)) for _, get in columns])
    return grid(cells)


def grid(cells: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart (the first row is the header)."""
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value).replace("\n", " ")
