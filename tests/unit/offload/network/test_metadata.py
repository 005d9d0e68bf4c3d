"""The metadata HTTP app: paths, methods, framing, and no crash on any request."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from offload.network.metadata import InstanceMetadata, MetadataApp

APP = MetadataApp(
    InstanceMetadata(instance_id="i-1", hostname="h", local_ipv4=None, mac="52:54:00:00:00:01")
)


def status(request: bytes) -> int:
    response = APP(request)
    assert response is not None
    return int(response.split(b" ", 2)[1])


def test_incomplete_head_waits() -> None:
    assert APP(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n") is None
    assert APP(b"GET /latest/meta-data/ HTTP/1.0\n\n") is not None


def test_paths_and_methods() -> None:
    assert status(b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: h\r\n\r\n") == 200
    assert status(b"GET /latest/meta-data HTTP/1.1\r\nHost: h\r\n\r\n") == 200  # a directory
    assert status(b"GET /latest/meta-data/local-ipv4 HTTP/1.1\r\nHost: h\r\n\r\n") == 404
    assert status(b"GET /latest/user-data HTTP/1.1\r\nHost: h\r\n\r\n") == 404  # none given
    assert status(b"GET /latest/meta-data/public-keys/ HTTP/1.1\r\nHost: h\r\n\r\n") == 404
    assert status(b"GET /etc/passwd HTTP/1.1\r\nHost: h\r\n\r\n") == 404
    assert status(b"GET /latest/../latest/meta-data/mac HTTP/1.1\r\nHost: h\r\n\r\n") == 404
    assert status(b"PUT /latest/api/token HTTP/1.1\r\nHost: h\r\n\r\n") == 405
    assert status(b"GARBAGE\r\n\r\n") == 400
    assert status(b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n") == 400  # not printable ASCII
    assert status(b"GET /latest/meta-data/ HTTP/1.1\r\n\r\n") == 400  # HTTP/1.1 needs a Host
    assert status(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400
    assert status(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n") == 400
    assert status(b"GET latest HTTP/1.0\r\n\r\n") == 400  # not an origin-form target
    index = APP(b"GET /latest/meta-data/?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert index is not None and index.endswith(b"\r\n\r\ninstance-id\nhostname\nmac")
    head = APP(b"HEAD /latest/meta-data/instance-id HTTP/1.1\r\nHost: h\r\n\r\n")
    assert head is not None and head.endswith(
        b"Content-Length: 3\r\nConnection: close\r\nServer: bmaas-card\r\n\r\n"
    )


@given(st.binary(max_size=300))
def test_any_request_gets_a_well_framed_response(data: bytes) -> None:
    response = APP(data + b"\r\n\r\n")
    assert response is not None and response.startswith(b"HTTP/1.1 ")
    head, body = response.split(b"\r\n\r\n", 1)
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    assert length == len(body) or data.startswith(b"HEAD ")
