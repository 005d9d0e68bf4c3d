"""``bmctl`` exit statuses: stable, documented in ``bmctl --help`` and docs/bmctl.md.

Scripts may rely on them; a new failure kind gets a new number, an existing
number never changes meaning.
"""

from __future__ import annotations

OK = 0
API_ERROR = 1  # the API refused or failed the call (any gRPC code not listed below)
USAGE = 2  # bad command line, bad config file, unreadable token/key/user-data file
NOT_FOUND = 3  # the named resource does not exist (gRPC NOT_FOUND)
TIMEOUT = 4  # --wait ran out of --timeout, or a call's deadline passed (DEADLINE_EXCEEDED)
UNREACHABLE = 5  # no endpoint answered (gRPC UNAVAILABLE from every replica)
FAILED = 6  # --wait saw the resource end in a failed state (instance FAILED, volume ERROR)
INTERRUPTED = 130  # Ctrl-C

TABLE: list[tuple[int, str]] = [
    (OK, "success"),
    (API_ERROR, "the API refused or failed the call"),
    (USAGE, "usage error: bad flags, config file, token or input file"),
    (NOT_FOUND, "the resource does not exist"),
    (TIMEOUT, "--wait timed out, or a call's deadline passed"),
    (UNREACHABLE, "no endpoint could be reached"),
    (FAILED, "--wait: the resource ended FAILED (instance) or ERROR (volume)"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
]


def epilog() -> str:
    return "exit status:\n" + "\n".join(f"  {code:<4}{text}" for code, text in TABLE)
