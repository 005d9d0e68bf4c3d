"""A small list filter (a subset of AIP-160), parsed once, applied to records.

Grammar::

    filter := ""                                 (matches everything)
            | term { "AND" term }
    term   := field op value
    field  := ident { "." ident }                e.g. state, zone, hardware.cpus
    op     := "=" | "!="
    value  := bare | '"' chars '"'               bare = [-_./:A-Za-z0-9]+

``AND`` is case-sensitive; whitespace around operators is optional.  A field
is an attribute path on the record; the value is compared with the
attribute's string form (enums by value, booleans as ``true``/``false``).
Unknown fields raise ``InvalidArgument`` at parse time when a record type is
given, so a typo is an error and not an empty page.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from typing import Any

from control_plane.domain.errors import InvalidArgument

_TERM_RE = re.compile(
    r"\s*(?P<field>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*"
    r'(?P<op>!=|=)\s*(?P<value>"[^"]*"|[-_./:A-Za-z0-9]+)'
)
_AND_RE = re.compile(r"\s+AND\s+")


@dataclass(frozen=True, slots=True)
class Term:
    path: tuple[str, ...]
    negate: bool
    value: str


@dataclass(frozen=True, slots=True)
class Filter:
    terms: tuple[Term, ...] = ()

    def matches(self, record: object) -> bool:
        for term in self.terms:
            actual = _lookup(record, term.path)
            if (actual == term.value) == term.negate:
                return False
        return True

    def equals(self, field: str) -> str | None:
        """The value of a top-level ``field=value`` term, if any (lets the
        caller narrow a key range before filtering)."""
        for term in self.terms:
            if term.path == (field,) and not term.negate:
                return term.value
        return None


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _lookup(record: object, path: tuple[str, ...]) -> str:
    value: Any = record
    for part in path:
        value = getattr(value, part, None)
    return _stringify(value)


def parse_filter(text: str, *, record_type: type | None = None) -> Filter:
    """Parse *text*; ``InvalidArgument`` on a syntax error or unknown field."""
    terms: list[Term] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TERM_RE.match(text, pos)
        if m is None:
            raise InvalidArgument(f"filter: syntax error at offset {pos}: {text[pos : pos + 20]!r}")
        value = m["value"]
        if value.startswith('"'):
            value = value[1:-1]
        path = tuple(m["field"].split("."))
        if record_type is not None:
            _check_path(record_type, path)
        terms.append(Term(path=path, negate=m["op"] == "!=", value=value))
        pos = m.end()
        if pos == len(text):
            break
        sep = _AND_RE.match(text, pos)
        if sep is None:
            raise InvalidArgument(f"filter: expected AND at offset {pos}")
        pos = sep.end()
    return Filter(tuple(terms))


def _check_path(record_type: type, path: tuple[str, ...]) -> None:
    current: Any = record_type
    for part in path:
        if not (isinstance(current, type) and dataclasses.is_dataclass(current)):
            raise InvalidArgument(f"filter: {'.'.join(path)!r} is not a field")
        names = {f.name for f in dataclasses.fields(current)}
        if part not in names:
            raise InvalidArgument(f"filter: unknown field {'.'.join(path)!r}")
        current = typing.get_type_hints(current)[part]
