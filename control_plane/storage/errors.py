"""The storage package's exceptions (the tree is drawn in ``__init__``)."""

from __future__ import annotations


class CephError(Exception):
    """The cluster refused an operation (one line, names the image)."""


class CephUnavailable(CephError):
    """The cluster did not answer within the timeout."""


class PoolMissing(CephError):
    """The configured pool does not exist."""
