"""The domain exception tree.  Every layer raises these; ``control_plane.api``
maps them to gRPC status codes through one table.

::

    BmaasError
     ├── NotFound                  the named resource does not exist
     ├── AlreadyExists             a resource with that name exists
     ├── InvalidArgument           the request is malformed (names, CIDRs, sizes...)
     ├── FailedPrecondition        the request is valid but the resource's state forbids it
     │    └── InvalidTransition    a lifecycle table has no edge for (state, event)
     ├── Aborted                   optimistic concurrency lost: etag / revision mismatch
     ├── ResourceExhausted         no host fits, or a tenant quota would be exceeded
     │    ├── NoCapacity
     │    └── QuotaExceeded
     ├── PermissionDenied          authenticated, but not allowed
     ├── Unauthenticated           no or bad credential
     └── Unavailable               the backing store cannot be reached (retry later)

``Conflict`` is an alias of ``Aborted`` (the HTTP name for the same condition).
"""

from __future__ import annotations


class BmaasError(Exception):
    """Root of every error the control plane raises on purpose."""


class NotFound(BmaasError):
    pass


class AlreadyExists(BmaasError):
    pass


class InvalidArgument(BmaasError):
    pass


class FailedPrecondition(BmaasError):
    pass


class InvalidTransition(FailedPrecondition):
    """A lifecycle table has no edge for ``(state, event)``."""

    def __init__(self, machine: str, state: str, event: str) -> None:
        super().__init__(f"{machine}: no transition from {state} on {event!r}")
        self.machine = machine
        self.state = state
        self.event = event


class Aborted(BmaasError):
    """The resource changed since it was read (etag / mod_revision mismatch)."""


Conflict = Aborted


class ResourceExhausted(BmaasError):
    pass


class NoCapacity(ResourceExhausted):
    """No host satisfies the placement request."""


class QuotaExceeded(ResourceExhausted):
    """The tenant's quota does not allow the request."""


class PermissionDenied(BmaasError):
    pass


class Unauthenticated(BmaasError):
    pass


class Unavailable(BmaasError):
    """The store (etcd) could not be reached or timed out."""
