"""Image source URIs: what agents can fetch, what tenants are shown."""

from __future__ import annotations

import pytest

from control_plane.api import uris
from control_plane.api.errors import InvalidField


@pytest.mark.parametrize(
    "uri",
    [
        "/srv/images/debian.raw",
        "file:///srv/images/debian.raw",
        "file://localhost/srv/x.raw",
        "http://mirror.example/debian.raw",
        "https://user:pw@mirror.example:8443/x.raw?sig=1",
    ],
)
def test_fetchable_sources_pass(uri: str) -> None:
    uris.check_fetchable(uri, "image.source_uri")


@pytest.mark.parametrize(
    ("uri", "said"),
    [
        ("s3://bucket/debian.raw", "s3://"),
        ("ftp://mirror.example/x.raw", "ftp://"),
        ("images/debian.raw", "relative path"),
        ("file://otherhost/x.raw", "file://"),
        ("http:///no-host", "http://"),
        ("http://[::1/x", "not a valid URI"),
    ],
)
def test_unfetchable_sources_are_refused_naming_the_problem(uri: str, said: str) -> None:
    with pytest.raises(InvalidField) as exc:
        uris.check_fetchable(uri, "image.source_uri")
    assert said in str(exc.value) and "image.source_uri" in str(exc.value)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("https://user:pw@mirror.example/x.raw", "https://mirror.example/x.raw"),
        ("http://tok@mirror.example:8080/a?b=c", "http://mirror.example:8080/a?b=c"),
        ("https://u:p@ss@host/x", "https://host/x"),
        ("https://mirror.example/x.raw", "https://mirror.example/x.raw"),
        ("/srv/x.raw", "/srv/x.raw"),
    ],
)
def test_redacted_drops_user_info_only(uri: str, shown: str) -> None:
    assert uris.redacted(uri) == shown
