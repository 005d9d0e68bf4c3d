"""files: private files in private directories whatever the umask; the credential check."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_agent.config import ConfigError
from host_agent.files import CredentialFileError, private_dir, read_credential, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """The worst umask: without explicit modes everything would be world-readable."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_write_private_makes_0600_in_0700_dirs(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    path = tmp_path / "instances" / "abc" / "n1.json"
    write_private(path, b'{"user_data": "secret"}')
    assert path.read_bytes() == b'{"user_data": "secret"}'
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700 and mode(path.parent.parent) == 0o700
    assert mode(tmp_path) == 0o755  # a parent that existed is not touched
    write_private(path, b"second")  # replaced whole
    assert path.read_bytes() == b"second" and mode(path) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["n1.json"]  # no temp left


def test_existing_files_and_dirs_are_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o755)
    path = directory / "agent.json"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, b"new")
    assert mode(directory) == 0o700 and mode(path) == 0o600
    sticky = tmp_path / "other"
    sticky.mkdir()
    sticky.chmod(0o1777)
    private_dir(sticky)
    assert mode(sticky) == 0o1700


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "d" / "f"
    write_private(path, b"old")
    with pytest.raises(TypeError):
        write_private(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in path.parent.iterdir()] == ["f"]


@pytest.mark.parametrize("bits", [0o600, 0o400, 0o700])
def test_credential_owner_only_is_read(tmp_path: Path, bits: int) -> None:
    path = tmp_path / "cred"
    path.write_text("  host-1.s3cret\n")
    path.chmod(bits)
    assert read_credential(path) == "host-1.s3cret"


@pytest.mark.parametrize("bits", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o666])
def test_credential_open_to_others_is_refused(tmp_path: Path, bits: int) -> None:
    path = tmp_path / "cred"
    path.write_text("host-1.s3cret\n")
    path.chmod(bits)
    with pytest.raises(CredentialFileError) as info:
        read_credential(path)
    assert isinstance(info.value, ConfigError)
    assert str(info.value) == f"{path} is open to group or others (mode {bits:04o}); chmod 600 it"


def test_credential_file_errors(tmp_path: Path) -> None:
    with pytest.raises(CredentialFileError, match="No such file"):
        read_credential(tmp_path / "missing")
    with pytest.raises(CredentialFileError, match="Is a directory"):
        read_credential(tmp_path)
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe")
    binary.chmod(0o600)
    with pytest.raises(CredentialFileError, match="not a text file"):
        read_credential(binary)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(CredentialFileError, match="not a regular file"):
        read_credential_nonblocking(fifo)


def read_credential_nonblocking(path: Path) -> str:
    """Opening a FIFO for reading blocks until a writer comes: give it one."""
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        return read_credential(path)
    finally:
        os.close(fd)
