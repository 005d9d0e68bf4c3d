"""Store errors and the one place etcd/gRPC errors are translated.

The store raises the domain tree (``NotFound``, ``AlreadyExists``,
``Aborted``, ``QuotaExceeded``, ``Unavailable``...) plus::

    Aborted
     ├── RecordChanged         a compared record moved (``.name``, ``.revision`` now; 0 = gone)
     └── RevisionCompacted     a watch (or a read pinned to a revision) asked for
                               history etcd has compacted away: relist, then
                               watch from the list's revision

    NotFound
     └── RecordGone            a record compared in a transaction was deleted (``.name``)

    AlreadyExists
     └── ClaimTaken            a create claimed a value another record holds
          │                    (``.kind``, ``.value``); pick another and create again
          ├── AddressInUse     an IP address of a subnet (``.subnet``, ``.address``)
          ├── MacInUse         a MAC address (global)
          └── VniInUse         a VXLAN network identifier (global)

    Unavailable
     ├── LeaseExpired          a write bound to a lease etcd no longer has (it
     │                         expired): grant another and write again
     ├── LeadershipLost        a fenced txn (``kv.fenced``) found the leader key gone
     │                         or re-created: this replica no longer leads
     └── StoreFull             etcd raised its NOSPACE alarm: it refuses every write
                               until history is compacted and the members defragmented

``translate(exc)`` maps an aetcd/grpc exception to the domain error that
the caller re-raises with ``raise translate(exc) from exc``.
"""

from __future__ import annotations

import aetcd
import grpc

from control_plane.domain.errors import (
    Aborted,
    AlreadyExists,
    BmaasError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)


class RecordChanged(Aborted):
    """The record *name* no longer has the compared etag."""

    def __init__(self, name: str, expected: int, revision: int) -> None:
        super().__init__(f"{name} was modified (etag {expected}, now {revision})")
        self.name = name
        self.revision = revision


class RecordGone(NotFound):
    """A record compared in a transaction no longer exists."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} not found")
        self.name = name


class ClaimTaken(AlreadyExists):
    """A value a new record claims (``records.claims_of``) is held by another."""

    kind = "value"

    def __init__(self, value: str, message: str = "") -> None:
        super().__init__(message or f"{self.kind} {value} is already in use")
        self.value = value


class AddressInUse(ClaimTaken):
    """The IP address a new network interface claims is held by another one."""

    kind = "address"

    def __init__(self, subnet: str, address: str) -> None:
        super().__init__(address, f"{subnet}: address {address} is already in use")
        self.subnet = subnet
        self.address = address


class MacInUse(ClaimTaken):
    """The MAC address a new network interface claims is held by another one."""

    kind = "mac"


class VniInUse(ClaimTaken):
    """The VXLAN network identifier a new VPC claims is held by another one."""

    kind = "vni"


class LeadershipLost(Unavailable):
    """A controller write was refused: the leader term it was fenced on is over."""

    def __init__(self, key: str, create_revision: int) -> None:
        super().__init__(f"no longer the leader ({key} created at {create_revision} is gone)")
        self.key = key
        self.create_revision = create_revision


class LeaseExpired(Unavailable):
    """A put named a lease that etcd has already expired or revoked."""


class StoreFull(Unavailable):
    """etcd's database reached its space quota (the NOSPACE alarm)."""

    def __init__(self) -> None:
        super().__init__(
            "etcd is out of space (NOSPACE alarm): writes are refused until its history "
            "is compacted, its members defragmented and the alarm disarmed "
            "(the controllers' leader tries; see docs/operations.md)"
        )


class RevisionCompacted(Aborted):
    def __init__(self, compacted_revision: int) -> None:
        super().__init__(f"revision compacted below {compacted_revision}")
        self.compacted_revision = compacted_revision


_GRPC_CODES: dict[grpc.StatusCode, type[BmaasError]] = {
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.CANCELLED: Unavailable,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
}


def translate(exc: BaseException) -> BmaasError:
    """The domain error for a foreign (aetcd / grpc / OS) exception."""
    if isinstance(exc, BmaasError):
        return exc
    if isinstance(exc, aetcd.RevisionCompactedError):
        return RevisionCompacted(exc.compacted_revision)
    if isinstance(exc, aetcd.ConnectionFailedError | aetcd.ConnectionTimeoutError):
        return Unavailable(f"etcd unreachable: {exc}")
    if isinstance(exc, aetcd.WatchTimeoutError):
        return Unavailable("etcd watch setup timed out")
    if isinstance(exc, grpc.aio.AioRpcError):
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "space exceeded" in str(
            exc.details()
        ):
            return StoreFull()
        if exc.code() == grpc.StatusCode.NOT_FOUND and "lease not found" in (exc.details() or ""):
            return LeaseExpired(f"etcd: {exc.details()}")
        if exc.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in (exc.details() or ""):
            return RevisionCompacted(0)  # a read pinned to a revision compacted since
        kind = _GRPC_CODES.get(exc.code(), Unavailable)
        return kind(f"etcd: {exc.code().name}: {exc.details()}")
    if isinstance(exc, aetcd.ClientError | OSError | TimeoutError):
        return Unavailable(f"etcd: {exc!r}")
    return Unavailable(f"etcd: unexpected {exc!r}")


FOREIGN_ERRORS: tuple[type[BaseException], ...] = (
    aetcd.ClientError,
    grpc.aio.AioRpcError,
    OSError,
    TimeoutError,
)
