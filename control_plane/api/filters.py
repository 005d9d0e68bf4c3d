"""List filters in the API's words: the field names of the proto messages.

``page(request, message, to_pb)`` validates a ``ListRequest`` and compiles
its ``filter`` against *message*'s descriptor: the grammar is
``control_plane.domain.filtering`` (``field=value`` / ``field!=value``
terms joined by `` AND ``, values bare or double-quoted), and each field
path must name a proto field a client sees in ``Get``/``List`` responses::

    filterable  singular scalar fields (string, bool, integers, enums),
                also inside singular message fields: ``hardware.cpus``,
                ``quota.max_instances``
    refused     unknown fields, repeated fields (``volumes``), message
                fields themselves (``hardware``), ``google.protobuf.Timestamp``
                fields, and ``NOT_FILTERABLE`` (computed per call)

Values are normalised once at parse time: an enum value is its short name
(``RUNNING``) whether given short or in full (``INSTANCE_STATE_RUNNING``),
booleans are ``true``/``false``, integers decimal; anything else is
INVALID_ARGUMENT naming the field.  The store applies the ``Filter`` to each
record's message (``to_pb(record)``), so a filter means exactly what the
response shows (a volume's ``state`` is IN_USE when it has an ``instance``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from control_plane.api import validate
from control_plane.api.errors import InvalidField, shown
from control_plane.domain.filtering import Filter, Term, parse_terms

#: message full name -> top-level fields whose value is not stored on the record
NOT_FILTERABLE: dict[str, frozenset[str]] = {
    "bmaas.v1.Tenant": frozenset({"usage"}),
}
_INTEGERS = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_INTEGER = re.compile(r"-?[0-9]{1,20}")


class _ListRequest(Protocol):
    page_size: int
    page_token: str
    filter: str


def page(
    request: _ListRequest, message: type[Message], to_pb: Callable[[Any], Message]
) -> tuple[int, str, Filter]:
    """``(page_size, page_token, filter)`` of a ListRequest for *message* records."""
    size, token, text = validate.page(request.page_size, request.page_token, request.filter)
    return size, token, compile_filter(text, message, to_pb)


def compile_filter(text: str, message: type[Message], to_pb: Callable[[Any], Message]) -> Filter:
    descriptor: Any = message.DESCRIPTOR
    try:
        raw = parse_terms(text)
    except Exception as exc:
        raise InvalidField("filter", str(exc).removeprefix("filter: ")) from exc
    terms = tuple(_check(descriptor, term) for term in raw)
    return Filter(terms, text=text, view=to_pb if terms else None, lookup=proto_lookup)


def filterable_fields(descriptor: Any) -> list[str]:
    """The field paths of *descriptor* a filter may name (documented order)."""
    skip = NOT_FILTERABLE.get(descriptor.full_name, frozenset())
    out: list[str] = []
    for fd in descriptor.fields:
        if fd.name in skip or _is_repeated(fd):
            continue
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if fd.message_type.full_name.startswith("google.protobuf."):
                continue
            out += [f"{fd.name}.{sub}" for sub in filterable_fields(fd.message_type)]
        else:
            out.append(fd.name)
    return out


def _is_repeated(fd: Any) -> bool:
    return bool(fd.is_repeated)


def _check(descriptor: Any, term: Term) -> Term:
    path = ".".join(term.path)
    current: Any = descriptor
    skip = NOT_FILTERABLE.get(descriptor.full_name, frozenset())
    for i, part in enumerate(term.path):
        fd = current.fields_by_name.get(part)
        if fd is None or (i == 0 and part in skip):
            fields = ", ".join(filterable_fields(descriptor))
            raise InvalidField(
                "filter",
                f"{shown(path, 64)} is not a filterable field of {descriptor.full_name}"
                f" (fields: {fields})",
            )
        last = i == len(term.path) - 1
        if _is_repeated(fd):
            raise InvalidField("filter", f"{shown(path, 64)} is a repeated field")
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if fd.message_type.full_name.startswith("google.protobuf."):
                raise InvalidField("filter", f"{shown(path, 64)} (a timestamp) cannot be filtered")
            if last:
                raise InvalidField(
                    "filter", f"{shown(path, 64)} is a message; name one of its fields"
                )
            current = fd.message_type
            continue
        if not last:
            raise InvalidField("filter", f"{shown(path, 64)}: {part} has no fields")
        return Term(term.path, term.negate, _value(fd, path, term.value))
    raise AssertionError("unreachable")  # a parsed term has at least one segment


def _value(fd: Any, path: str, value: str) -> str:
    if fd.type == FieldDescriptor.TYPE_ENUM:
        enum = fd.enum_type
        prefix = enum_prefix(enum)
        short = value.removeprefix(prefix)
        if prefix + short not in enum.values_by_name:
            names = ", ".join(v.name.removeprefix(prefix) for v in enum.values)
            raise InvalidField("filter", f"{path}: {shown(value, 64)} is not one of {names}")
        return short
    if fd.type == FieldDescriptor.TYPE_BOOL:
        if value not in ("true", "false"):
            raise InvalidField("filter", f"{path}: {shown(value, 64)} is not true or false")
        return value
    if fd.type in _INTEGERS:
        if not _INTEGER.fullmatch(value):
            raise InvalidField("filter", f"{path}: {shown(value, 64)} is not an integer")
        return str(int(value))
    return value


def enum_prefix(enum: Any) -> str:
    """``HostState`` -> ``HOST_STATE_`` (the prefix of its value names)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


def proto_lookup(msg: Any, path: tuple[str, ...]) -> str:
    """The string a filter term compares with: *path* read from message *msg*."""
    for part in path[:-1]:
        msg = getattr(msg, part)
    fd = msg.DESCRIPTOR.fields_by_name[path[-1]]
    raw = getattr(msg, path[-1])
    if fd.type == FieldDescriptor.TYPE_ENUM:
        value = fd.enum_type.values_by_number.get(raw)
        return str(raw) if value is None else value.name.removeprefix(enum_prefix(fd.enum_type))
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)
