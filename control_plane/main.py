"""``bmaas-control-plane`` entry point."""

from __future__ import annotations

import sys


def main() -> int:
    print("bmaas-control-plane: not implemented yet (see issue 4)", file=sys.stderr)
    return 2
