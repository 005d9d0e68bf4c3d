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
- ``google.rpc.ResourceInfo`` for every NOT_FOUND (``resource_type`` is the
  proto message, ``bmaas.v1.Instance``; ``resource_name`` the AIP name), taken
  from the exception's ``resource_name``/``resource_type`` attributes
  (``MissingResource``) or read from the store's wording ``[<field>: ]<name>
  not found``.

Bounds: the status travels in HTTP/2 trailers (``grpc-message``,
percent-encoded, and ``grpc-status-details-bin``, base64), and a peer's
header-list limit (8-16 KiB in common clients) turns an oversized trailer into
a broken connection (GOAWAY).  So nothing unbounded is ever echoed: a
request value quoted in a message goes through ``shown()`` (at most
``ECHO_CHARS`` characters, then an ellipsis and the full length), and
``to_status`` enforces the totals whatever the message says: the message is
cut to ``MESSAGE_BYTES`` UTF-8 bytes, each string in a detail to
``DETAIL_BYTES``, ``ErrorInfo.metadata`` to ``METADATA_ENTRIES`` entries, and
when the packed details still exceed ``DETAILS_BYTES`` only the
``ErrorInfo`` is kept (without its metadata if even that is too big).
Message plus details therefore stay below ``STATUS_BYTES``.

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
#: characters of a request value a message may quote (``shown``)
ECHO_CHARS = 100
#: UTF-8 bytes of ``google.rpc.Status.message``
MESSAGE_BYTES = 512
#: UTF-8 bytes of each string inside a detail (field paths, descriptions, names)
DETAIL_BYTES = 256
#: entries of ``ErrorInfo.metadata``
METADATA_ENTRIES = 4
#: serialized bytes of all details together
DETAILS_BYTES = 2048
#: what a client ever receives: message + serialized details
STATUS_BYTES = MESSAGE_BYTES + DETAILS_BYTES + 64
ELLIPSIS = "…"

# Domain validation helpers word their messages "<field>: <problem>".
_FIELD_PREFIX = re.compile(r"^([a-z_][a-z0-9_]*(?:\[\d+\])?(?:\.[a-z_][a-z0-9_]*(?:\[\d+\])?)*): ")
# The store and ``Servicer.ref`` word NOT_FOUND "[<field>: ]<name> not found".
_NOT_FOUND = re.compile(r"^(?:[a-z_][a-z0-9_.\[\]]*: )?(?P<name>[A-Za-z0-9][^\s]*) not found$")

#: the last collection of an AIP name -> the proto message of that resource
RESOURCE_TYPES = {
    "tenants": "bmaas.v1.Tenant",
    "instances": "bmaas.v1.Instance",
    "volumes": "bmaas.v1.Volume",
    "vpcs": "bmaas.v1.Vpc",
    "subnets": "bmaas.v1.Subnet",
    "networkInterfaces": "bmaas.v1.NetworkInterface",
    "placementGroups": "bmaas.v1.PlacementGroup",
    "hosts": "bmaas.v1.Host",
    "instanceTypes": "bmaas.v1.InstanceType",
    "images": "bmaas.v1.Image",
}


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """*text* cut to *limit* characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + ELLIPSIS


def clip_bytes(text: str, limit: int) -> str:
    """*text* cut to at most *limit* UTF-8 bytes (never inside a character)."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - len(ELLIPSIS.encode())].decode(errors="ignore") + ELLIPSIS


def shown(value: object, limit: int = ECHO_CHARS) -> str:
    """How a message quotes a request value: ``repr`` of at most *limit*
    characters of it, plus its length when it was cut."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{clip(text, limit)!r} ({len(text)} characters)"


class InvalidField(domain.InvalidArgument):
    """A request field failed validation; ``field`` is its path (``instance.image``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.description = message


class MissingResource(domain.NotFound):
    """NOT_FOUND for the resource *name* (optionally referred to by request *field*)."""

    def __init__(self, name: str, *, field: str = "") -> None:
        prefix = f"{field}: " if field else ""
        super().__init__(f"{prefix}{clip(name, MESSAGE_BYTES // 2)} not found")
        self.resource_name = clip_bytes(name, DETAIL_BYTES)
        self.resource_type = resource_type(name)


def resource_type(name: str) -> str:
    segments = name.split("/")
    collection = segments[-2] if len(segments) >= 2 else ""
    return RESOURCE_TYPES.get(collection, "")


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


def _d(value: object) -> str:
    """A string inside a detail, bounded."""
    return clip_bytes(str(value), DETAIL_BYTES)


def _resource_info(exc: BaseException, message: str) -> Any | None:
    name = getattr(exc, "resource_name", None)
    kind = getattr(exc, "resource_type", None)
    if not isinstance(name, str):
        legacy = getattr(exc, "resource", None)
        if isinstance(legacy, str) and legacy:
            name = legacy
        else:
            match = _NOT_FOUND.match(message)
            name = match["name"] if match else ""
    if not isinstance(kind, str) or not kind:
        kind = resource_type(name)
    if not (name or isinstance(exc, domain.NotFound)):
        return None
    return error_details_pb2.ResourceInfo(
        resource_type=_d(kind), resource_name=_d(name), description=_d(message)
    )


def to_status(exc: BaseException) -> status_pb2.Status:
    mapping = lookup(exc)
    if mapping is None:
        log.exception("unmapped error", exc_info=exc)
        mapping, message = _INTERNAL, "internal error"
    else:
        message = str(exc) or mapping.reason.lower().replace("_", " ")
    message = clip_bytes(message, MESSAGE_BYTES)
    code_value: int = mapping.code.value[0]
    status = status_pb2.Status(code=code_value, message=message)
    metadata = getattr(exc, "metadata", None)
    info = error_details_pb2.ErrorInfo(reason=mapping.reason, domain=DOMAIN)
    if isinstance(metadata, dict):
        items = list(metadata.items())[:METADATA_ENTRIES]
        info.metadata.update({clip(str(k), 64): _d(v) for k, v in items})
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
                            field=_d(field), description=_d(description)
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
                            subject=_d(subject or mapping.reason.lower()), description=_d(message)
                        )
                    ]
                )
            )
        )
    if mapping.code == grpc.StatusCode.NOT_FOUND or getattr(exc, "resource", None):
        resource = _resource_info(exc, message)
        if resource is not None:
            status.details.append(_pack(resource))
    if sum(d.ByteSize() for d in status.details) > DETAILS_BYTES:
        del status.details[1:]
        if status.details[0].ByteSize() > DETAILS_BYTES:
            info.metadata.clear()
            status.details[0].CopyFrom(_pack(info))
    return status


def grpc_status(exc: BaseException) -> grpc.Status:
    return rpc_status.to_status(to_status(exc))


async def abort(context: Any, exc: BaseException) -> NoReturn:
    status = grpc_status(exc)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("unreachable")  # context.abort always raises


assert code_pb2.OK == 0  # the google.rpc.Code numbering equals grpc.StatusCode's
