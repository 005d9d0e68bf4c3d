"""The metadata HTTP app: paths, methods, framing, session tokens, and no crash on any request."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from offload.network.metadata import InstanceMetadata, MetadataApp
from offload.network.tokens import MetadataTokens

MD = InstanceMetadata(instance_id="i-1", hostname="h", local_ipv4=None, mac="52:54:00:00:00:01")
APP = MetadataApp(MD, tokens=MetadataTokens.OPTIONAL)


class Clock:
    now = 50.0

    def __call__(self) -> float:
        return self.now


def status(request: bytes, app: MetadataApp = APP) -> int:
    response = app(request)
    assert response is not None
    return int(response.split(b" ", 2)[1])


def get(path: str, headers: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: h\r\n{headers}\r\n".encode()


def put_token(ttl: str, extra: str = "") -> bytes:
    line = f"X-aws-ec2-metadata-token-ttl-seconds: {ttl}\r\n" if ttl else ""
    return f"PUT /latest/api/token HTTP/1.1\r\nHost: h\r\n{line}{extra}\r\n".encode()


def test_incomplete_head_waits() -> None:
    assert APP(b"") is None
    assert APP(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n") is None
    assert APP(b"GET /latest/meta-data/ HTTP/1.0\n\n") is not None
    request = get("/latest/meta-data/mac")
    for end in range(len(request)):  # drip-fed: nothing until the empty line
        assert APP(request[:end]) is None, request[:end]
    assert APP(request) == APP(request + b"trailing body")


def test_paths_and_methods() -> None:
    assert status(get("/latest/meta-data/instance-id")) == 200
    assert status(get("/latest/meta-data")) == 200  # a directory without its slash
    assert status(get("/latest/meta-data/local-ipv4")) == 404  # no address
    assert status(get("/latest/user-data")) == 404  # none given
    assert status(get("/latest/meta-data/public-keys/")) == 404
    assert status(get("/etc/passwd")) == 404
    assert status(get("/latest/../latest/meta-data/mac")) == 404
    assert status(b"DELETE /latest/meta-data/ HTTP/1.1\r\nHost: h\r\n\r\n") == 405
    assert status(get("/latest/api/token")) == 405  # tokens are PUT
    assert status(b"GARBAGE\r\n\r\n") == 400
    assert status(b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n") == 400  # not printable ASCII
    assert status(b"GET /latest/meta-data/ HTTP/1.1\r\n\r\n") == 400  # HTTP/1.1 needs a Host
    assert status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400
    assert status(b"GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n") == 400
    assert status(b"GET latest HTTP/1.0\r\n\r\n") == 400  # not an origin-form target
    index = APP(get("/latest/meta-data/?x=1"))
    assert index is not None and index.endswith(b"\r\n\r\ninstance-id\nhostname\nmac")
    head = APP(b"HEAD /latest/meta-data/instance-id HTTP/1.1\r\nHost: h\r\n\r\n")
    assert head is not None and head.endswith(
        b"Content-Length: 3\r\nConnection: close\r\nServer: bmaas-card\r\n\r\n"
    )


def test_token_flow_when_required() -> None:
    clock = Clock()
    app = MetadataApp(MD, clock=clock)  # required is the default
    assert app.policy is MetadataTokens.REQUIRED
    assert status(get("/latest/meta-data/instance-id"), app) == 401
    assert status(get("/nope"), app) == 401  # the policy comes before the path
    response = app(put_token("120"))
    assert response is not None and response.startswith(b"HTTP/1.1 200 OK\r\n")
    head, token = response.split(b"\r\n\r\n", 1)
    assert b"\r\nx-aws-ec2-metadata-token-ttl-seconds: 120" in head.lower()
    assert len(token) == 43 and token.isascii()
    with_token = f"X-aws-ec2-metadata-token: {token.decode()}\r\n"
    ok = app(get("/latest/meta-data/instance-id", with_token))
    assert ok is not None and ok.startswith(b"HTTP/1.1 200") and ok.endswith(b"i-1")
    assert status(get("/latest/meta-data/", "x-AWS-ec2-METADATA-token: nope\r\n"), app) == 401
    twice = with_token + "X-aws-ec2-metadata-token: nope\r\n"
    assert status(get("/latest/meta-data/", twice), app) == 401  # every token must be valid
    clock.now += 119.9
    assert status(get("/latest/meta-data/", with_token), app) == 200
    clock.now += 0.1
    assert status(get("/latest/meta-data/", with_token), app) == 401  # expired
    assert app.unauthorized == 5


def test_token_requests_checked() -> None:
    clock = Clock()
    app = MetadataApp(MD, clock=clock)
    for ttl in ("", "0", "21601", "-5", "1e3", "99999999999999999999", " "):
        assert status(put_token(ttl), app) == 400, ttl
    assert status(put_token("21600"), app) == 200
    assert status(put_token("1"), app) == 200
    double = "X-aws-ec2-metadata-token-ttl-seconds: 5\r\n"
    assert status(put_token("5", double), app) == 400
    assert status(put_token("5", "X-Forwarded-For: 10.0.0.9\r\n"), app) == 403
    assert status(b"PUT /latest/meta-data/ HTTP/1.1\r\nHost: h\r\n\r\n", app) == 405
    assert len(app.tokens) == 2


def test_optional_serves_without_token_but_checks_one_given() -> None:
    app = MetadataApp(MD, tokens=MetadataTokens.OPTIONAL)
    assert status(get("/latest/meta-data/mac"), app) == 200
    assert status(get("/latest/meta-data/mac", "X-aws-ec2-metadata-token: forged\r\n"), app) == 401


@given(st.binary(max_size=300))
def test_any_request_gets_a_well_framed_response(data: bytes) -> None:
    response = APP(data + b"\r\n\r\n")
    assert response is not None and response.startswith(b"HTTP/1.1 ")
    head, body = response.split(b"\r\n\r\n", 1)
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    assert length == len(body) or data.startswith(b"HEAD ")


_HEADERS = st.sampled_from(
    [
        "Host: h",
        "X-aws-ec2-metadata-token-ttl-seconds: 60",
        "X-aws-ec2-metadata-token-ttl-seconds: 0",
        "X-aws-ec2-metadata-token: abc",
        "X-Forwarded-For: 1.2.3.4",
        "Content-Length: 5",
        "Transfer-Encoding: chunked",
        "Connection: keep-alive",
        "Expect: 100-continue",
    ]
)


@given(
    st.sampled_from(["GET", "HEAD", "PUT", "POST", "OPTIONS", "get"]),
    st.sampled_from(["/", "/latest/api/token", "/latest/meta-data/", "/latest/user-data", "*"]),
    st.sampled_from(["HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "HTTP/1.1 x"]),
    st.lists(_HEADERS, max_size=5),
    st.binary(max_size=20),
)
def test_structured_requests_never_crash(
    method: str, path: str, version: str, headers: list[str], body: bytes
) -> None:
    app = MetadataApp(MD, clock=Clock())
    text = f"{method} {path} {version}\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    response = app(text.encode() + body)
    assert response is not None and response.startswith(b"HTTP/1.1 ")
    code = int(response.split(b" ", 2)[1])
    assert code in (200, 400, 401, 403, 404, 405)
    if code == 200 and path != "/latest/api/token":
        assert "X-aws-ec2-metadata-token: abc" not in headers  # never with a forged token
    assert len(app.tokens) <= 1
