"""Metric names in PromQL expressions and in a text exposition.

``metric_names(expr)`` is a small scanner, not a PromQL parser: it drops
string literals, label matchers (``{...}``), ranges and subqueries
(``[...]``), the label lists of ``by``/``without``/``on``/``ignoring``/
``group_left``/``group_right``, Grafana variables and numbers, then keeps
every identifier that is not a keyword and not followed by ``(`` (a
function or aggregation).  ``exposed_names(text)`` reads the families and
samples of a Prometheus text exposition, histogram and summary suffixes
included, so a query naming ``x_bucket`` is checked against a family ``x``
that the endpoint declares.
"""

from __future__ import annotations

import re

KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "and",
        "or",
        "unless",
        "inf",
        "nan",
        "atan2",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$__\w+|\$\w+")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    text = _STRING.sub('""', expr)
    text = _GRAFANA_VAR.sub("1m", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _LABEL_LIST.sub(" ", text)
    text = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?[smhdwy]?\b", " ", text)
    names: set[str] = set()
    for m in _IDENT.finditer(text):
        word = m.group(0)
        rest = text[m.end() :].lstrip()
        if word.lower() in KEYWORDS or rest.startswith("("):
            continue
        names.add(word)
    return names


def exposed_names(text: str) -> set[str]:
    """Sample names a query may use against the endpoint that produced *text*."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            names.add(family)
            if kind == "histogram":
                names.update(f"{family}_{s}" for s in ("bucket", "sum", "count"))
            elif kind == "summary":
                names.update(f"{family}_{s}" for s in ("sum", "count"))
            elif kind == "counter" and not family.endswith("_total"):
                names.add(f"{family}_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names
