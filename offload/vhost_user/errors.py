"""vhost-user errors, under the data plane's ``OffloadError``::

    OffloadError
    └── VhostUserError
        ├── MalformedMessage        bytes that do not decode (version, size,
        │                           payload layout): the server closes the
        │                           connection, never the process
        ├── RequestRefused          a well-formed request we cannot honour:
        │   │                       a non-zero REPLY_ACK when one was asked
        │   │                       for, otherwise the connection is closed
        │   └── UnknownRequest      a request code we do not know (only
        │                           reported when no reply was asked for)
        ├── InvalidTransition       a vring lifecycle event that its table
        │                           does not allow in the current state
        ├── InflightRegionInvalid   the shared inflight region does not match
        │                           its header (desc_num, version) or size
        ├── BackendChannelError     the back-end request channel is gone or
        │                           the front-end answered with a failure
        └── SocketUnavailable       the server cannot listen on its path
            └── SocketInUse         because a live process listens there

``SocketUnavailable`` is raised by ``VhostUserServer.bind`` at start-up.  Every
other one is caused by the front-end on one connection; the server
catches ``VhostUserError`` (and ``OffloadError`` from the memory table) at
the connection edge, logs it, closes that connection and listens again.
"""

from __future__ import annotations

from offload.errors import OffloadError

__all__ = [
    "BackendChannelError",
    "InflightRegionInvalid",
    "InvalidTransition",
    "MalformedMessage",
    "RequestRefused",
    "SocketInUse",
    "SocketUnavailable",
    "UnknownRequest",
    "VhostUserError",
]


class VhostUserError(OffloadError):
    """Base of every vhost-user protocol error."""


class MalformedMessage(VhostUserError):
    """The front-end sent bytes that do not decode as a vhost-user message."""


class RequestRefused(VhostUserError):
    """A well-formed request that this back-end cannot honour."""


class UnknownRequest(RequestRefused):
    """A request code this back-end does not know."""


class InvalidTransition(VhostUserError):
    """A vring lifecycle event not allowed in the ring's current state."""


class InflightRegionInvalid(VhostUserError):
    """The shared inflight-tracking region is inconsistent with its description."""


class BackendChannelError(VhostUserError):
    """A back-end-initiated request (e.g. CONFIG_CHANGE_MSG) could not be delivered."""


class SocketUnavailable(VhostUserError):
    """The server cannot listen on its socket path."""


class SocketInUse(SocketUnavailable):
    """Another live process is listening on the socket path."""
