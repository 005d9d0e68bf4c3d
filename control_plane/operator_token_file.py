"""The operator-token file: several operator tokens, rotated without a restart.

``--operator-token-file FILE`` names a file of operator tokens, one per
line (blank lines and lines starting with ``#`` ignored).  Every token in
it is accepted at once, so rotation is: add the new token, move the
operators' clients to it, delete the old line.  The replica re-reads the
file when its (inode, size, mtime) changes -- checked every
``POLL_INTERVAL`` seconds -- and at once on SIGHUP; the new set replaces
the old one in one step (``Authenticator.set_operator_tokens``).

The file must be a regular file that neither group nor others can read or
write (mode 0600 or stricter): at startup anything else is one line on
stderr and exit status 1.  A re-read that fails (file gone, mode widened,
unreadable) keeps the tokens in force and logs why; an empty file is a
valid answer (no operator token: OperatorService refuses every call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: seconds between checks of the file's (inode, size, mtime)
POLL_INTERVAL = 1.0


class OperatorTokenFileError(Exception):
    """The file cannot be used (missing, unreadable, readable by others)."""


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)


def read_tokens(path: Path) -> tuple[tuple[str, ...], tuple[int, int, int, int]]:
    """The tokens in *path* and the stat signature they were read at."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise OperatorTokenFileError(f"{path} is not a regular file")
        if st.st_mode & 0o077:
            raise OperatorTokenFileError(
                f"{path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others may "
                "read or write it (chmod 600)"
            )
        text = path.read_text()
    except OSError as exc:
        raise OperatorTokenFileError(f"{path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise OperatorTokenFileError(f"{path} is not UTF-8 text") from exc
    lines = (line.strip() for line in text.splitlines())
    tokens = tuple(line for line in lines if line and not line.startswith("#"))
    return tokens, _signature(st)


async def follow(
    path: Path,
    apply: Callable[[tuple[str, ...]], None],
    *,
    signature: tuple[int, int, int, int],
    reread: asyncio.Event,
    interval: float = POLL_INTERVAL,
) -> None:
    """Call *apply* with the file's tokens whenever it changes or *reread* is
    set (SIGHUP), starting from the state *signature* describes."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reread.wait(), timeout=interval)
        forced = reread.is_set()
        reread.clear()
        try:
            now = _signature(os.stat(path))
        except OSError as exc:
            log.warning("operator-token file %s: %s (tokens kept)", path, exc.strerror or exc)
            continue
        if now == signature and not forced:
            continue
        try:
            tokens, signature = read_tokens(path)
        except OperatorTokenFileError as exc:
            log.warning("operator-token file not re-read: %s (tokens kept)", exc)
            signature = now
            continue
        apply(tokens)
        log.info("operator-token file %s re-read: %d token(s)", path, len(tokens))
