"""The operator-token file: parsing, permissions, re-reading on change or SIGHUP."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from control_plane import operator_token_file as otf


def write(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)


def test_one_token_per_line_comments_and_blanks_ignored(tmp_path: Path) -> None:
    f = tmp_path / "tokens"
    write(f, "# operators\nfirst-token\n\n  second-token  \n")
    tokens, _ = otf.read_tokens(f)
    assert tokens == ("first-token", "second-token")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_a_file_others_can_read_or_write_is_refused(tmp_path: Path, mode: int) -> None:
    f = tmp_path / "tokens"
    write(f, "t\n", mode)
    with pytest.raises(otf.OperatorTokenFileError, match="chmod 600"):
        otf.read_tokens(f)


def test_missing_file_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(otf.OperatorTokenFileError, match="No such file"):
        otf.read_tokens(tmp_path / "absent")
    with pytest.raises(otf.OperatorTokenFileError, match="not a regular file"):
        otf.read_tokens(tmp_path)


async def until(cond: object, deadline: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not cond():  # type: ignore[operator]
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_follow_applies_changes_and_rereads_on_request(tmp_path: Path) -> None:
    f = tmp_path / "tokens"
    write(f, "a\n")
    _, sig = otf.read_tokens(f)
    seen: list[tuple[str, ...]] = []
    reread = asyncio.Event()
    task = asyncio.create_task(
        otf.follow(f, seen.append, signature=sig, reread=reread, interval=0.05)
    )
    try:
        write(f, "a\nb\n")
        await until(lambda: seen and seen[-1] == ("a", "b"))
        write(f, "b\n", 0o644)  # widened: not applied, old set kept
        write(f, "b\n", 0o644)
        reread.set()
        await until(lambda: not reread.is_set())
        assert seen[-1] == ("a", "b")
        write(f, "b\n")
        await until(lambda: seen[-1] == tuple("b"))
        n = len(seen)
        reread.set()  # SIGHUP re-reads even an unchanged file
        await until(lambda: len(seen) == n + 1)
    finally:
        task.cancel()
