"""``bmaas-agent`` entry point."""

from __future__ import annotations

import sys


def main() -> int:
    print("bmaas-agent: not implemented yet", file=sys.stderr)
    return 2
