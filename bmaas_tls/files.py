"""Reading PEM files for credentials: a missing, unreadable or empty file
is a ``TlsFileError`` naming the setting, never an OSError later."""

from __future__ import annotations

from pathlib import Path

from bmaas_tls.errors import TlsFileError


def read_pem(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsFileError(what, path, exc.strerror or str(exc)) from None
    if b"-----BEGIN " not in data:
        raise TlsFileError(what, path, "not a PEM file")
    return data
