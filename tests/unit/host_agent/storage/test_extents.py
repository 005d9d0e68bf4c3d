"""The extent walker and the sparse writer."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from host_agent.storage.extents import (
    BLOCK,
    data_extents,
    first_nonzero,
    is_zero,
    write_sparse,
)

MIB = 1 << 20


def test_data_extents_skip_holes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    with path.open("wb") as f:
        f.truncate(16 * MIB)
        f.seek(4 * MIB)
        f.write(b"x" * MIB)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert list(data_extents(fd, 0, 16 * MIB)) == [(4 * MIB, MIB)]
        assert list(data_extents(fd, 0, 4 * MIB + 10)) == [(4 * MIB, 10)]
        assert list(data_extents(fd, 6 * MIB, 16 * MIB)) == []
    finally:
        os.close(fd)


@given(st.binary(max_size=3 * BLOCK), st.integers(0, 3 * BLOCK))
def test_is_zero_and_first_nonzero(data: bytes, pad: int) -> None:
    buf = bytearray(pad) + data
    zero = not any(buf)
    assert is_zero(buf) == zero
    idx = first_nonzero(buf, len(buf))
    assert idx == (-1 if zero else next(i for i, b in enumerate(buf) if b))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 15), st.booleans()), min_size=1, max_size=16))
def test_write_sparse_writes_only_nonzero_blocks(blocks: list[tuple[int, bool]]) -> None:
    buf = bytearray(16 * BLOCK)
    for index, full in blocks:
        at = index * BLOCK + (0 if full else BLOCK - 1)
        buf[at] = 1
    nonzero = {i for i in range(16) if any(buf[i * BLOCK : (i + 1) * BLOCK])}
    with tempfile.TemporaryFile() as f:
        written = write_sparse(f.fileno(), buf, len(buf), 0)
        os.ftruncate(f.fileno(), len(buf))
        assert written == len(nonzero) * BLOCK
        assert os.pread(f.fileno(), len(buf), 0) == bytes(buf)
