"""The one table that turns domain errors into gRPC statuses.

``to_status(exc)`` walks the exception's MRO and takes the first class found
in ``ERROR_TABLE`` (so ``NoCapacity`` falls back to ``ResourceExhausted`` if
it had no row of its own), then builds a ``google.rpc.Status`` with rich
details packed as ``Any``:

- always a ``google.rpc.ErrorInfo`` (reason from the table, domain
  ``bmaas.dev``, plus ``metadata`` from the exception's optional ``metadata``
  dict);
- ``google.rpc.BadRequest`` with one field violation when the exception has a
  ``field`` attribute (``InvalidField`` below), or is an ``InvalidArgument``
  whose message starts with ``<field path>: `` (the domain helpers' wording);
- ``google.rpc.QuotaFailure`` for ``QuotaExceeded``/``NoCapacity``;
- ``google.rpc.ResourceInfo`` when the exception names a ``resource``.

``abort(context, exc)`` sends it with ``grpc_status.rpc_status.to_status``
so clients can read the details with ``rpc_status.from_call``.  Errors the
table does not know are bugs: they become INTERNAL with a generic message
(the traceback goes to the log, never to the client).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from control_plane.domain import errors as domain

log = logging.getLogger(__name__)

DOMAIN = "bmaas.dev"
# Domain validation helpers word their messages "<field>: <problem>".
_FIELD_PREFIX = re.compile(r"^([a-z_][a-z0-9_]*(?:\[\d+\])?(?:\.[a-z_][a-z0-9_]*(?:\[\d+\])?)*): ")


class InvalidField(domain.InvalidArgument):
    """A request field failed validation; ``field`` is its path (``instance.image``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.description = message


@dataclass(frozen=True, slots=True)
class Mapping:
    code: grpc.StatusCode
    reason: str


ERROR_TABLE: dict[type[BaseException], Mapping] = {
    domain.NotFound: Mapping(grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
    domain.AlreadyExists: Mapping(grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS"),
    domain.InvalidArgument: Mapping(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    domain.InvalidTransition: Mapping(grpc.StatusCode.FAILED_PRECONDITION, "INVALID_TRANSITION"),
    domain.FailedPrecondition: Mapping(grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
    domain.Aborted: Mapping(grpc.StatusCode.ABORTED, "ETAG_MISMATCH"),
    domain.NoCapacity: Mapping(grpc.StatusCode.RESOURCE_EXHAUSTED, "NO_CAPACITY"),
    domain.QuotaExceeded: Mapping(grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED"),
    domain.ResourceExhausted: Mapping(grpc.StatusCode.RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"),
    domain.PermissionDenied: Mapping(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
    domain.Unauthenticated: Mapping(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
    domain.Unavailable: Mapping(grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE"),
    TimeoutError: Mapping(grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
}

_INTERNAL = Mapping(grpc.StatusCode.INTERNAL, "INTERNAL")


def lookup(exc: BaseException) -> Mapping | None:
    for cls in type(exc).__mro__:
        found = ERROR_TABLE.get(cls)
        if found is not None:
            return found
    return None


def _pack(msg: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)  # type: ignore[arg-type]
    return packed


def to_status(exc: BaseException) -> status_pb2.Status:
    mapping = lookup(exc)
    if mapping is None:
        log.exception("unmapped error", exc_info=exc)
        mapping, message = _INTERNAL, "internal error"
    else:
        message = str(exc) or mapping.reason.lower().replace("_", " ")
    code_value: int = mapping.code.value[0]
    status = status_pb2.Status(code=code_value, message=message)
    metadata = getattr(exc, "metadata", None)
    info = error_details_pb2.ErrorInfo(reason=mapping.reason, domain=DOMAIN)
    if isinstance(metadata, dict):
        info.metadata.update({str(k): str(v) for k, v in metadata.items()})
    status.details.append(_pack(info))
    field = getattr(exc, "field", None)
    if field is None and isinstance(exc, domain.InvalidArgument):
        match = _FIELD_PREFIX.match(message)
        field = match.group(1) if match else None
    if isinstance(field, str) and field:
        description = getattr(exc, "description", None) or message
        status.details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=field, description=str(description)
                        )
                    ]
                )
            )
        )
    if isinstance(exc, domain.ResourceExhausted):
        subject = str(getattr(exc, "subject", "") or "")
        status.details.append(
            _pack(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(
                            subject=subject or mapping.reason.lower(), description=message
                        )
                    ]
                )
            )
        )
    resource = getattr(exc, "resource", None)
    if isinstance(resource, str) and resource:
        status.details.append(
            _pack(error_details_pb2.ResourceInfo(resource_name=resource, description=message))
        )
    return status


def grpc_status(exc: BaseException) -> grpc.Status:
    return rpc_status.to_status(to_status(exc))


async def abort(context: Any, exc: BaseException) -> NoReturn:
    status = grpc_status(exc)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("unreachable")  # context.abort always raises


assert code_pb2.OK == 0  # the google.rpc.Code numbering equals grpc.StatusCode's
