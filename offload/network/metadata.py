"""The instance metadata service: HTTP/1.x requests in, whole responses out.

``MetadataApp`` is what the TCP responder calls with the bytes a connection
has received so far.  The bytes are parsed by h11 (sans-I/O, like the rest
of the card): a fresh ``h11.Connection`` in the server role is fed the whole
buffer on every call, so the app keeps no per-connection state and the
responder's buffer bound (``max_request``) is the only size limit.  While
h11 needs more data the app returns ``None``; once the request head is
complete (an empty line, CRLF or bare LF) it returns the complete response,
written by the same h11 connection; anything h11 refuses (a malformed
request line or header, HTTP/1.1 without ``Host``) gets 400.  Every response
says ``Connection: close`` and carries a ``Content-Length``, so one request
is served per connection and any body is ignored.

Paths follow EC2 and cloud-init's Ec2 data source (IMDSv1)::

    /                                       latest
    /latest/                                meta-data/, user-data (if any)
    /latest/meta-data/                      the index below
    /latest/meta-data/instance-id           hostname, local-ipv4, mac likewise
    /latest/meta-data/public-keys/          "0=key0" lines
    /latest/meta-data/public-keys/0/        openssh-key
    /latest/meta-data/public-keys/0/openssh-key
    /latest/user-data                       raw bytes; 404 when there are none

A directory also answers without its trailing slash; the query string is
ignored.  GET and HEAD are served, other methods get 405 (so cloud-init's
IMDSv2 token PUT falls back to v1), a request h11 refuses 400, any other path
404.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11

__all__ = ["InstanceMetadata", "MetadataApp", "http_response"]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


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


def _response(conn: h11.Connection, status: int, body: bytes, *, head: bool) -> bytes:
    headers = [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        ("Server", "bmaas-card"),
    ]
    reason = _REASONS[status].encode()
    out = conn.send(h11.Response(status_code=status, headers=headers, reason=reason)) or b""
    return out if head else out + body


def _request(data: bytes) -> tuple[h11.Connection, h11.Request | None] | None:
    """h11's reading of *data*: ``None`` while the head is incomplete, else the
    connection and the request (``None`` when h11 refused it)."""
    if not data:
        return None  # (h11 reads an empty chunk as the end of the stream)
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return conn, None
    if event is h11.NEED_DATA:
        return None
    return conn, event if isinstance(event, h11.Request) else None


def http_response(request: bytes, tree: dict[str, bytes]) -> bytes | None:
    """The response to *request*, or ``None`` while its head is incomplete."""
    parsed = _request(request)
    if parsed is None:
        return None
    conn, req = parsed
    if req is None or not req.target.startswith(b"/"):
        return _response(conn, 400, b"bad request\n", head=False)
    if req.method not in (b"GET", b"HEAD"):
        return _response(conn, 405, b"method not allowed\n", head=False)
    head = req.method == b"HEAD"
    path = req.target.split(b"?", 1)[0].decode("ascii")  # h11 allows printable ASCII only
    if path in ("/", ""):
        return _response(conn, 200, b"latest", head=head)
    if path == "/latest":
        path = "/latest/"
    if not path.startswith("/latest/"):
        return _response(conn, 404, b"not found\n", head=head)
    key = path[len("/latest/") :]
    body = tree.get(key)
    if body is None and not key.endswith("/"):
        body = tree.get(key + "/")
    if body is None:
        return _response(conn, 404, b"not found\n", head=head)
    return _response(conn, 200, body, head=head)


class MetadataApp:
    """``http_response`` bound to one instance's metadata (the tree is built once)."""

    def __init__(self, metadata: InstanceMetadata) -> None:
        self.metadata = metadata
        self._tree = _tree(metadata)

    def __call__(self, request: bytes) -> bytes | None:
        return http_response(request, self._tree)
