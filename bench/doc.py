"""One benchmark's section of ``docs/benchmarks.md``.

Each benchmark owns the text between ``<!-- KEY:begin -->`` and
``<!-- KEY:end -->`` and rewrites only that; a missing section is appended
under its heading.
"""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(key: str, heading: str, text: str, *, doc: Path = DOC) -> None:
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    section = f"{begin}\n{text}\n{end}"
    current = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        current = head + section + rest.split(end, 1)[1]
    else:
        current = f"{current.rstrip()}\n\n## {heading}\n\n{section}\n"
    doc.write_text(current)
