"""Files the agent keeps secret: owner-only, written whole or not at all.

What the agent writes about a tenant (its user data and SSH keys, in the
metadata file each ``offload-net`` serves) and about itself (its state)
goes through ``write_private``:

1. ``private_dir`` makes the directory and every missing parent with mode
   0700 (``chmod`` after ``mkdir``, so the umask does not matter) and
   tightens an existing directory that group or others can enter; it never
   touches a parent that already exists (that may be ``/var/lib``);
2. the data goes to a temp file in the same directory, created with
   ``O_EXCL | O_NOFOLLOW`` and mode 0600 (``fchmod`` again, whatever the
   umask), written whole and fsynced;
3. ``os.replace`` puts it in place and the directory is fsynced, so a crash
   leaves the old file or the new one, never half of one, and at no moment
   is there a readable copy for anyone but the owner.

``read_credential`` is the other direction: the agent's credential file
must be a regular file that neither group nor others can access (as ssh
insists of a private key), checked on the open file (``fstat``), not on a
name that could change in between; anything else is a
``CredentialFileError`` (a ``ConfigError``) with a one-line message.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from host_agent.config import ConfigError

__all__ = ["CredentialFileError", "private_dir", "read_credential", "write_private"]

FILE_MODE = 0o600
DIR_MODE = 0o700


class CredentialFileError(ConfigError):
    """The credential file cannot be used (unreadable, not a file, too open, not text)."""


def private_dir(path: Path) -> Path:
    """*path* as a directory only its owner can enter (created with its missing parents)."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass  # made by someone else meanwhile; tightened below if it is the leaf
        else:
            os.chmod(directory, DIR_MODE)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        os.chmod(path, mode & ~0o077)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Replace *path* with *data*, mode 0600 in a 0700 directory, atomically."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)  # the rename itself survives a crash
    finally:
        os.close(dirfd)


def read_credential(path: Path) -> str:
    """The credential in *path* (stripped); ``CredentialFileError`` unless it is safe to use."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CredentialFileError(exc.strerror or str(exc)) from exc
    try:
        st = os.fstat(fd)  # the file we read, not whatever the name points to later
        if stat.S_ISDIR(st.st_mode):
            raise CredentialFileError("Is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise CredentialFileError(f"{path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise CredentialFileError(
                f"{path} is open to group or others (mode {mode:04o}); chmod 600 it"
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read()
    finally:
        os.close(fd)
    try:
        return raw.decode().strip()
    except UnicodeDecodeError:
        raise CredentialFileError("not a text file") from None
