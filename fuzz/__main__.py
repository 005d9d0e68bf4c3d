"""``python -m fuzz``: run a target, write the seed corpus, or run a campaign.

    python -m fuzz run TARGET [libFuzzer flags] [corpus dirs]
    python -m fuzz seeds [--out fuzz/corpus]
    python -m fuzz campaign [--seconds N] [--jobs N] [TARGET ...]

``run`` hands everything after the target name to libFuzzer (``-help=1``
lists its flags).  ``seeds`` and ``campaign`` are in ``fuzz.campaign``.
"""

from __future__ import annotations

import sys

from fuzz.harness import run


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "run":
        run(argv[1], argv[2:])
    # Imported only for the other commands: ``fuzz.campaign`` imports the
    # targets (and so ``offload``) to write seeds, which must not happen
    # before ``run`` instruments them.
    from fuzz.campaign import main as campaign_main

    return campaign_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
