"""The driver-side front-end's exception tree.

Every error derives from :class:`FrontendError`.  Back-end mistakes on the
socket and device mistakes in the used ring are separate families, so a test
can tell "the back-end broke the protocol" from "the device broke the ring"::

    FrontendError
    ├── BackendDisconnected       the socket closed under us
    ├── BackendProtocolError      a reply we cannot accept (header, size, request)
    ├── BackendRefused            REPLY_ACK non-zero, or a feature we require is missing
    ├── FrontendTimeout           no reply / no completion in time
    ├── QueueFull                 no free descriptor or request slot
    └── DeviceRingError           the device broke the used ring
        ├── DeviceUsedIndexJumped     used.idx moved past what is in flight
        └── DeviceUsedUnknownHead     a used element names a head not in flight
"""

from __future__ import annotations

__all__ = [
    "BackendDisconnected",
    "BackendProtocolError",
    "BackendRefused",
    "DeviceRingError",
    "DeviceUsedIndexJumped",
    "DeviceUsedUnknownHead",
    "FrontendError",
    "FrontendTimeout",
    "QueueFull",
]


class FrontendError(Exception):
    """Base of every error the driver-side front-end raises."""


class BackendDisconnected(FrontendError):
    """The back-end closed the vhost-user socket."""


class BackendProtocolError(FrontendError):
    """The back-end sent a reply that breaks the vhost-user protocol."""


class BackendRefused(FrontendError):
    """The back-end nacked a message or lacks a feature we require."""


class FrontendTimeout(FrontendError):
    """A reply or a completion did not arrive in time."""


class QueueFull(FrontendError):
    """No free descriptors or request slots are left on this queue."""


class DeviceRingError(FrontendError):
    """The device wrote something impossible into the used ring."""


class DeviceUsedIndexJumped(DeviceRingError):
    """used.idx advanced by more entries than the driver has in flight."""


class DeviceUsedUnknownHead(DeviceRingError):
    """A used element names a descriptor head that is not in flight."""
