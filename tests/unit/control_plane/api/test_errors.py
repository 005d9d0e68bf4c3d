"""The one error table: every domain error has a gRPC code and rich details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from control_plane.api.errors import ERROR_TABLE, InvalidField, to_status
from control_plane.domain import errors as d


def details(status: object) -> dict[str, object]:
    out: dict[str, object] = {}
    for any_ in status.details:  # type: ignore[attr-defined]
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.QuotaFailure,
        ):
            msg = cls()
            if any_.Unpack(msg):
                out[cls.__name__] = msg
    return out


@pytest.mark.parametrize(
    ("exc", "code", "reason"),
    [
        (d.NotFound("x"), grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
        (d.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS"),
        (d.InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (d.FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
        (
            d.InvalidTransition("host", "A", "b"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "INVALID_TRANSITION",
        ),
        (d.Aborted("x"), grpc.StatusCode.ABORTED, "ETAG_MISMATCH"),
        (d.NoCapacity("x"), grpc.StatusCode.RESOURCE_EXHAUSTED, "NO_CAPACITY"),
        (d.QuotaExceeded("x"), grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED"),
        (d.PermissionDenied("x"), grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
        (d.Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
        (d.Unavailable("x"), grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE"),
        (RuntimeError("secret internals"), grpc.StatusCode.INTERNAL, "INTERNAL"),
    ],
)
def test_every_error_maps_to_a_code_and_reason(
    exc: BaseException, code: grpc.StatusCode, reason: str
) -> None:
    status = to_status(exc)
    assert status.code == code.value[0]
    info = details(status)["ErrorInfo"]
    assert info.reason == reason and info.domain == "bmaas.dev"  # type: ignore[attr-defined]
    if code == grpc.StatusCode.INTERNAL:
        assert "secret" not in status.message
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        assert "QuotaFailure" in details(status)


def test_every_domain_error_class_is_in_the_table() -> None:
    classes = [c for c in vars(d).values() if isinstance(c, type) and issubclass(c, d.BmaasError)]
    for cls in classes:
        if cls is d.BmaasError:
            continue
        assert any(issubclass(cls, k) for k in ERROR_TABLE), cls


def test_field_violations_from_invalid_field_and_from_message_prefix() -> None:
    bad = details(to_status(InvalidField("instance.image", "is required")))["BadRequest"]
    assert [v.field for v in bad.field_violations] == ["instance.image"]  # type: ignore[attr-defined]
    bad = details(to_status(d.InvalidArgument("ssh_keys[2]: not a key")))["BadRequest"]
    assert [v.field for v in bad.field_violations] == ["ssh_keys[2]"]  # type: ignore[attr-defined]
    assert "BadRequest" not in details(to_status(d.InvalidArgument("no field here at all")))


def test_shown_quotes_at_most_echo_chars_and_says_how_long() -> None:
    from control_plane.api.errors import ECHO_CHARS, shown

    assert shown("abc") == "'abc'"
    long = shown("9" * 32768)
    assert long.endswith("(32768 characters)") and "…" in long
    assert len(long) < ECHO_CHARS + 40


def test_status_is_bounded_whatever_the_exception_says() -> None:
    from control_plane.api.errors import MESSAGE_BYTES, STATUS_BYTES

    huge = "é" * 40_000
    exc = InvalidField("etag", huge)
    exc.metadata = {f"k{i}": huge for i in range(50)}  # type: ignore[attr-defined]
    for e in (exc, d.NotFound(f"{huge} not found"), d.QuotaExceeded(huge), d.Aborted(huge)):
        status = to_status(e)
        assert len(status.message.encode()) <= MESSAGE_BYTES
        assert status.message.endswith("…")
        assert len(status.message.encode()) + sum(x.ByteSize() for x in status.details) < (
            STATUS_BYTES
        )
        assert details(status)["ErrorInfo"]


def test_not_found_carries_resource_info() -> None:
    from control_plane.api.errors import MissingResource

    def info(exc: BaseException) -> error_details_pb2.ResourceInfo:
        for any_ in to_status(exc).details:
            msg = error_details_pb2.ResourceInfo()
            if any_.Unpack(msg):
                return msg
        raise AssertionError("no ResourceInfo")

    got = info(MissingResource("tenants/a/volumes/v-1", field="instance.volumes[0]"))
    assert (got.resource_type, got.resource_name) == ("bmaas.v1.Volume", "tenants/a/volumes/v-1")
    got = info(d.NotFound("tenants/a/vpcs/v/subnets/s not found"))  # the store's wording
    assert (got.resource_type, got.resource_name) == (
        "bmaas.v1.Subnet",
        "tenants/a/vpcs/v/subnets/s",
    )
    got = info(d.NotFound("instance.image: images/nope not found"))  # Servicer.ref's wording
    assert (got.resource_type, got.resource_name) == ("bmaas.v1.Image", "images/nope")
    assert info(d.NotFound("something else went missing")).description
