"""The instance metadata service: HTTP/1.x requests in, whole responses out.

``MetadataApp`` is what the TCP responder calls with the bytes a connection
has received so far.  It returns ``None`` until the request head is complete
(an empty line, CRLF or bare LF), then the complete response for it; every
response says ``Connection: close`` and carries a ``Content-Length``, so one
request is served per connection and any body is ignored.

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
IMDSv2 token PUT falls back to v1), an unreadable request line 400, any other
path 404.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def _response(status: int, body: bytes, *, head: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        "Content-Type: text/plain",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "Server: bmaas-card",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)


def _head_end(data: bytes) -> bool:
    return b"\r\n\r\n" in data or b"\n\n" in data


def http_response(request: bytes, tree: dict[str, bytes]) -> bytes | None:
    """The response to *request*, or ``None`` while its head is incomplete."""
    if not _head_end(request):
        return None
    line = request.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[1].startswith(b"/"):
        return _response(400, b"bad request\n", head=False)
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        return _response(405, b"method not allowed\n", head=False)
    head = method == b"HEAD"
    try:
        path = target.decode("ascii")
    except UnicodeDecodeError:
        return _response(404, b"not found\n", head=head)
    if path in ("/", ""):
        return _response(200, b"latest", head=head)
    if path == "/latest":
        path = "/latest/"
    if not path.startswith("/latest/"):
        return _response(404, b"not found\n", head=head)
    key = path[len("/latest/") :]
    body = tree.get(key)
    if body is None and not key.endswith("/"):
        body = tree.get(key + "/")
    if body is None:
        return _response(404, b"not found\n", head=head)
    return _response(200, body, head=head)


class MetadataApp:
    """``http_response`` bound to one instance's metadata (the tree is built once)."""

    def __init__(self, metadata: InstanceMetadata) -> None:
        self.metadata = metadata
        self._tree = _tree(metadata)

    def __call__(self, request: bytes) -> bytes | None:
        return http_response(request, self._tree)
