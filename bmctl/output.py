"""Rendering of API responses: aligned text tables (default) or JSON.

A resource message is flattened to a row through a column spec
``(header, getter)``; JSON output uses ``MessageToDict`` with the proto field
names so scripts see the API's own spelling.  Enum values are shown without
their type prefix (``RUNNING``, not ``INSTANCE_STATE_RUNNING``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

Column = tuple[str, Callable[[Message], object]]


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
                    name = fd.enum_type.values_by_number[value].name
                    prefix = _enum_prefix(fd.enum_type.name)
                    value = name.removeprefix(prefix)
        if isinstance(value, Message):
            return ""
        if not isinstance(value, (str, bytes, int, float, bool)) and hasattr(value, "__iter__"):
            return ",".join(str(v) for v in value)
        return value

    return get


def _enum_prefix(type_name: str) -> str:
    out = []
    for i, ch in enumerate(type_name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.upper())
    return "".join(out) + "_"


def to_json(messages: Sequence[Message] | Message) -> str:
    if isinstance(messages, Message):
        return json.dumps(_dict(messages), indent=2, sort_keys=True)
    return json.dumps([_dict(m) for m in messages], indent=2, sort_keys=True)


def _dict(msg: Message) -> dict[str, object]:
    return MessageToDict(msg, preserving_proto_field_name=True)


def table(rows: Sequence[Message], columns: Sequence[Column]) -> str:
    cells = [[h for h, _ in columns]]
    for row in rows:
        cells.append([_text(get(row)) for _, get in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)
