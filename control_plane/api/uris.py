"""Image source URIs at the API edge: which the agents can fetch, what tenants see.

An agent fetches an image from ``file:///abs/path`` (or a bare absolute
path, on the agent's host) or ``http://`` / ``https://`` with a host name
(``host_agent.storage.images``); anything else -- ``s3://``, ``ftp://``, a
relative path, ``file://otherhost/`` -- would fail every instance booted
from it, so ``RegisterImage`` refuses it with INVALID_ARGUMENT.  A URI may
carry credentials as user info (``https://user:secret@host/...``): the
operator API shows it as stored, the tenant API with the user info removed
(``redacted``), so no tenant learns the operator's mirror password.
"""

from __future__ import annotations

import urllib.parse

from control_plane.api.errors import InvalidField

FETCHABLE = "http://, https://, file:///path or an absolute path"


def check_fetchable(uri: str, field: str) -> None:
    """Raise ``InvalidField`` unless an agent can fetch *uri*."""
    if uri.startswith("/"):
        return
    try:
        parts = urllib.parse.urlsplit(uri)
        host = parts.hostname
    except ValueError:
        raise InvalidField(field, f"is not a valid URI; use {FETCHABLE}") from None
    scheme = parts.scheme.lower()
    if scheme in ("http", "https") and host:
        return
    if scheme == "file" and parts.netloc in ("", "localhost") and parts.path.startswith("/"):
        return
    what = f"scheme {scheme}://" if scheme else "a relative path"
    raise InvalidField(field, f"uses {what}, which no agent can fetch; use {FETCHABLE}")


def redacted(uri: str) -> str:
    """*uri* without user info (``user:password@``); unchanged if it has none."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return uri if "@" not in uri else ""
    if "@" not in parts.netloc:
        return uri
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
