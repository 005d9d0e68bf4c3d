"""The instance metadata service: HTTP/1.x requests in, whole responses out.

``MetadataApp`` is what the TCP responder calls with the bytes a connection
has received so far.  The bytes are parsed by h11 (sans-I/O, like the rest
of the card): a fresh ``h11.Connection`` in the server role is fed the whole
buffer on every call, so the app keeps no per-connection state and the
responder's buffer bound (``max_request``) is the only size limit.  While
h11 needs more data the app returns ``None``; once the request head is
complete (an empty line, CRLF or bare LF) it returns the complete response,
written by the same h11 connection; anything h11 refuses (a malformed
request line or header, HTTP/1.1 without ``Host``) gets 400.  h11 is only
called once the buffer holds an empty line (its own end-of-head rule, a
regex search), so a guest that drip-feeds a request byte by byte costs a
search per segment, not a parse.  Every response
says ``Connection: close`` and carries a ``Content-Length``, so one request
is served per connection and any body is ignored.

Paths follow EC2 and cloud-init's Ec2 data source::

    PUT /latest/api/token                   a session token (IMDSv2, below)

    /                                       latest
    /latest/                                meta-data/, user-data (if any)
    /latest/meta-data/                      the index below
    /latest/meta-data/instance-id           hostname, local-ipv4, mac likewise
    /latest/meta-data/public-keys/          "0=key0" lines
    /latest/meta-data/public-keys/0/        openssh-key
    /latest/meta-data/public-keys/0/openssh-key
    /latest/user-data                       raw bytes; 404 when there are none

A directory also answers without its trailing slash; the query string is
ignored.  GET and HEAD are served, other methods get 405, a request h11
refuses 400, any other path 404.

Session tokens (IMDSv2): ``PUT /latest/api/token`` with exactly one
``X-aws-ec2-metadata-token-ttl-seconds: N`` header (N in 1..21600) returns a
fresh token from the NIC's ``SessionTokens`` as the body and the TTL in the
same header; a missing, repeated or out-of-range TTL gets 400, and a PUT
carrying ``X-Forwarded-For`` gets 403 (it came through a proxy in the
guest, which EC2 refuses too).  A GET or HEAD that carries
``X-aws-ec2-metadata-token`` must carry only valid tokens, else 401; one
without gets 401 when the NIC's policy is ``required`` and is served when it
is ``optional``.  The policy is checked before the path, so a client without
a token learns nothing of the tree.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import h11

from offload.network.tokens import MAX_TTL, MIN_TTL, MetadataTokens, SessionTokens

__all__ = ["TOKEN_HEADER", "TOKEN_PATH", "TTL_HEADER", "InstanceMetadata", "MetadataApp"]

_HEAD_END = re.compile(rb"\n\r?\n")
TOKEN_PATH = "/latest/api/token"
TOKEN_HEADER = b"x-aws-ec2-metadata-token"  # h11 gives header names in lower case
TTL_HEADER = b"x-aws-ec2-metadata-token-ttl-seconds"
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
}


@dataclass(frozen=True, slots=True)
class InstanceMetadata:
    """What the metadata service tells the instance."""

    instance_id: str
    hostname: str
    local_ipv4: str | None
    mac: str
    public_keys: tuple[str, ...] = ()
    user_data: bytes | None = None


def _tree(md: InstanceMetadata) -> dict[str, bytes]:
    """Every path (under /latest/) and its body; directories end with '/'."""
    leaves: dict[str, str] = {"instance-id": md.instance_id, "hostname": md.hostname}
    if md.local_ipv4 is not None:
        leaves["local-ipv4"] = md.local_ipv4
    leaves["mac"] = md.mac
    index = list(leaves)
    tree = {f"meta-data/{k}": v.encode() for k, v in leaves.items()}
    if md.public_keys:
        index.append("public-keys/")
        names = [f"{i}=key{i}" for i in range(len(md.public_keys))]
        tree["meta-data/public-keys/"] = "\n".join(names).encode()
        for i, key in enumerate(md.public_keys):
            tree[f"meta-data/public-keys/{i}/"] = b"openssh-key"
            tree[f"meta-data/public-keys/{i}/openssh-key"] = key.encode() + b"\n"
    tree["meta-data/"] = "\n".join(index).encode()
    top = ["meta-data/"]
    if md.user_data is not None:
        tree["user-data"] = md.user_data
        top.append("user-data")
    tree[""] = "\n".join(top).encode()
    return tree


def _response(
    conn: h11.Connection,
    status: int,
    body: bytes,
    *,
    head: bool,
    extra: list[tuple[str, str]] | None = None,
) -> bytes:
    headers = [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        ("Server", "bmaas-card"),
        *(extra or []),
    ]
    reason = _REASONS[status].encode()
    out = conn.send(h11.Response(status_code=status, headers=headers, reason=reason)) or b""
    return out if head else out + body


def _request(data: bytes) -> tuple[h11.Connection, h11.Request | None] | None:
    """h11's reading of *data*: ``None`` while the head is incomplete, else the
    connection and the request (``None`` when h11 refused it)."""
    if not _HEAD_END.search(data):
        return None  # h11's own end-of-head rule, checked cheaply: a drip-fed head costs little
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return conn, None
    if event is h11.NEED_DATA:
        return None
    return conn, event if isinstance(event, h11.Request) else None


def _lookup(tree: dict[str, bytes], path: str) -> bytes | None:
    """The body at *path* (without the query), or ``None``."""
    if path in ("/", ""):
        return b"latest"
    if path == "/latest":
        path = "/latest/"
    if not path.startswith("/latest/"):
        return None
    key = path[len("/latest/") :]
    body = tree.get(key)
    if body is None and not key.endswith("/"):
        body = tree.get(key + "/")
    return body


def _header(req: h11.Request, name: bytes) -> list[bytes]:
    return [value for key, value in req.headers if key == name]


class MetadataApp:
    """One instance's metadata service: the tree (built once) and the NIC's tokens."""

    def __init__(
        self,
        metadata: InstanceMetadata,
        *,
        tokens: MetadataTokens = MetadataTokens.REQUIRED,
        clock: Callable[[], float] = time.monotonic,
        max_tokens: int = 256,
    ) -> None:
        self.metadata = metadata
        self.policy = tokens
        self.tokens = SessionTokens(clock=clock, max_tokens=max_tokens)
        self._tree = _tree(metadata)
        self.unauthorized = 0

    def __call__(self, request: bytes) -> bytes | None:
        """The response to *request*, or ``None`` while its head is incomplete."""
        parsed = _request(request)
        if parsed is None:
            return None
        conn, req = parsed
        if req is None or not req.target.startswith(b"/"):
            return _response(conn, 400, b"bad request\n", head=False)
        path = req.target.split(b"?", 1)[0].decode("ascii")  # h11 allows printable ASCII only
        if path == TOKEN_PATH:
            if req.method != b"PUT":
                return _response(conn, 405, b"method not allowed\n", head=False)
            return self._token(conn, req)
        if req.method not in (b"GET", b"HEAD"):
            return _response(conn, 405, b"method not allowed\n", head=False)
        head = req.method == b"HEAD"
        if not self._authorized(_header(req, TOKEN_HEADER)):
            self.unauthorized += 1
            return _response(conn, 401, b"unauthorized\n", head=head)
        body = _lookup(self._tree, path)
        if body is None:
            return _response(conn, 404, b"not found\n", head=head)
        return _response(conn, 200, body, head=head)

    def _authorized(self, presented: list[bytes]) -> bool:
        if not presented:
            return self.policy is MetadataTokens.OPTIONAL
        return all(self.tokens.valid(t.decode("latin-1")) for t in presented)

    def _token(self, conn: h11.Connection, req: h11.Request) -> bytes:
        if _header(req, b"x-forwarded-for"):
            # EC2 refuses token requests that went through a proxy in the guest
            return _response(conn, 403, b"forbidden\n", head=False)
        ttl_values = _header(req, TTL_HEADER)
        if len(ttl_values) != 1 or not ttl_values[0].isdigit() or len(ttl_values[0]) > 5:
            return _response(conn, 400, b"bad request\n", head=False)
        ttl = int(ttl_values[0])
        if not MIN_TTL <= ttl <= MAX_TTL:
            return _response(conn, 400, b"bad request\n", head=False)
        token = self.tokens.issue(ttl).encode()
        extra = [(TTL_HEADER.decode(), str(ttl))]
        return _response(conn, 200, token, head=False, extra=extra)
