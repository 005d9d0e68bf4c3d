"""Errors of ``bmaas_tls``::

TlsError                 any TLS setting that cannot be used
└── TlsFileError         a certificate, key or CA file cannot be read
"""

from __future__ import annotations

from pathlib import Path


class TlsError(Exception):
    """A TLS setting that cannot be used; the message is one line."""


class TlsFileError(TlsError):
    def __init__(self, what: str, path: Path, reason: str) -> None:
        super().__init__(f"{what} {path}: {reason}")
        self.what = what
        self.path = path
