"""``offload-blk`` and ``offload-net`` entry points."""

from __future__ import annotations

import sys


def blk_main() -> int:
    print("offload-blk: not implemented yet (see issue 3)", file=sys.stderr)
    return 2


def net_main() -> int:
    print("offload-net: not implemented yet", file=sys.stderr)
    return 2
