"""A small list filter (a subset of AIP-160), parsed once, applied to records.

Grammar::

    filter := ""                                 (matches everything)
            | term { "AND" term }
    term   := field op value
    field  := ident { "." ident }                e.g. state, zone, hardware.cpus
    op     := "=" | "!="
    value  := bare | '"' chars '"'               bare = [-_./:A-Za-z0-9]+

``AND`` is case-sensitive; whitespace around operators is optional; a quoted
value may hold anything but a double quote.  ``parse_terms`` is the grammar
alone.  A ``Filter`` compares each term's value with the string form of the
field read from a record by its ``lookup`` (by default attribute access,
enums by value, booleans as ``true``/``false``), after an optional ``view``
turns the record into what the terms name (the API filters on a record's
protobuf message: ``control_plane.api.filters``).

``parse_filter(text, record_type=...)`` is the store's own dialect: fields
are attribute paths of the record dataclass, and unknown fields raise
``InvalidArgument`` at parse time, so a typo is an error and not an empty
page.  ``Filter.text`` is the source text; the store binds page tokens to it.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from control_plane.domain.errors import InvalidArgument

_TERM_RE = re.compile(
    r"\s*(?P<field>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*"
    r'(?P<op>!=|=)\s*(?P<value>"[^"]*"|[-_./:A-Za-z0-9]+)'
)
_AND_RE = re.compile(r"\s+AND\s+")
#: characters of the filter a syntax error quotes
_QUOTED = 20


@dataclass(frozen=True, slots=True)
class Term:
    path: tuple[str, ...]
    negate: bool
    value: str


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def attribute_lookup(record: object, path: tuple[str, ...]) -> str:
    """The default ``Filter.lookup``: attribute access along *path*."""
    value: Any = record
    for part in path:
        value = getattr(value, part, None)
    return _stringify(value)


Lookup = Callable[[Any, tuple[str, ...]], str]


@dataclass(frozen=True, slots=True)
class Filter:
    terms: tuple[Term, ...] = ()
    #: the text the filter was parsed from (page tokens are bound to it)
    text: str = ""
    #: record -> the object the terms' fields are read from (None: the record)
    view: Callable[[Any], Any] | None = None
    lookup: Lookup = attribute_lookup

    def matches(self, record: object) -> bool:
        if not self.terms:
            return True
        obj = record if self.view is None else self.view(record)
        for term in self.terms:
            actual = self.lookup(obj, term.path)
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


def parse_terms(text: str) -> tuple[Term, ...]:
    """The grammar alone: *text* as terms; ``InvalidArgument`` on a syntax error."""
    terms: list[Term] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TERM_RE.match(text, pos)
        if m is None:
            raise InvalidArgument(
                f"filter: syntax error at offset {pos}: {text[pos : pos + _QUOTED]!r}"
                ' (expected field=value, field!=value or field="value")'
            )
        value = m["value"]
        if value.startswith('"'):
            value = value[1:-1]
        terms.append(Term(path=tuple(m["field"].split(".")), negate=m["op"] == "!=", value=value))
        pos = m.end()
        if pos == len(text):
            break
        sep = _AND_RE.match(text, pos)
        if sep is None:
            raise InvalidArgument(f"filter: expected AND at offset {pos}")
        pos = sep.end()
    return tuple(terms)


def parse_filter(text: str, *, record_type: type | None = None) -> Filter:
    """Parse *text*; ``InvalidArgument`` on a syntax error or unknown field."""
    terms = parse_terms(text)
    if record_type is not None:
        for term in terms:
            _check_path(record_type, term.path)
    return Filter(terms, text=text)


def _check_path(record_type: type, path: tuple[str, ...]) -> None:
    current: Any = record_type
    shown = ".".join(path)[:64]
    for part in path:
        if not (isinstance(current, type) and dataclasses.is_dataclass(current)):
            raise InvalidArgument(f"filter: {shown!r} is not a field")
        names = {f.name for f in dataclasses.fields(current)}
        if part not in names:
            raise InvalidArgument(f"filter: unknown field {shown!r}")
        current = typing.get_type_hints(current)[part]
