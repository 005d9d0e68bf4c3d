"""Effects: what the sans-I/O back-end asks the session to do for one message.

``VhostUserBackend.handle`` returns a list of these, to be carried out in
order.  Effects that carry fds hand them over: the session owns them from then
on.  ``SendReply`` holds encoded bytes ready for the socket; two replies need
the outside world first: ``StopVring`` (GET_VRING_BASE, whose answer is the
ring's ``last_avail_idx`` once its worker stopped) and ``AllocateInflight``
(GET_INFLIGHT_FD, whose reply travels with the shared-memory fd the session
creates).
"""

from __future__ import annotations

from dataclasses import dataclass

from offload.vhost_user.messages import RegionDescription

__all__ = [
    "AddMemRegion",
    "AllocateInflight",
    "DiscardFds",
    "Effect",
    "Ignored",
    "RemoveMemRegion",
    "SendReply",
    "SetBackendReqFd",
    "SetInflightFd",
    "SetMemTable",
    "SetVringCall",
    "SetVringErr",
    "StartVring",
    "StopVring",
    "VringConfig",
    "VringEnable",
]


@dataclass(frozen=True, slots=True)
class VringConfig:
    """Everything the server needs to build a queue once the ring starts."""

    index: int
    size: int
    desc_user_addr: int
    avail_user_addr: int
    used_user_addr: int
    base: int
    event_idx: bool
    enabled: bool


@dataclass(frozen=True, slots=True)
class SendReply:
    data: bytes


@dataclass(frozen=True, slots=True)
class SetMemTable:
    """Replace the whole memory table; ``fds[i]`` backs ``regions[i]``."""

    regions: tuple[RegionDescription, ...]
    fds: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AddMemRegion:
    region: RegionDescription
    fd: int


@dataclass(frozen=True, slots=True)
class RemoveMemRegion:
    region: RegionDescription


@dataclass(frozen=True, slots=True)
class StartVring:
    """SET_VRING_KICK: (re)start a ring; the server stops a running worker first."""

    config: VringConfig
    kick_fd: int


@dataclass(frozen=True, slots=True)
class StopVring:
    """GET_VRING_BASE: stop the ring, then send ``vring_base_reply(index, last_avail_idx)``."""

    index: int


@dataclass(frozen=True, slots=True)
class SetVringCall:
    index: int
    fd: int | None


@dataclass(frozen=True, slots=True)
class SetVringErr:
    index: int
    fd: int | None


@dataclass(frozen=True, slots=True)
class VringEnable:
    index: int
    enabled: bool


@dataclass(frozen=True, slots=True)
class SetBackendReqFd:
    fd: int


@dataclass(frozen=True, slots=True)
class AllocateInflight:
    """GET_INFLIGHT_FD: create a zeroed shared region of ``mmap_size`` bytes, map it, and
    send ``reply`` with its fd attached."""

    mmap_size: int
    num_queues: int
    queue_size: int
    reply: bytes


@dataclass(frozen=True, slots=True)
class SetInflightFd:
    fd: int
    mmap_size: int
    mmap_offset: int
    num_queues: int
    queue_size: int


@dataclass(frozen=True, slots=True)
class DiscardFds:
    """Fds the message should not have carried (or that we refuse): close them unused."""

    fds: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Ignored:
    """A request that was refused without a way to tell the front-end; for the log."""

    request: int
    reason: str


Effect = (
    SendReply
    | SetMemTable
    | AddMemRegion
    | RemoveMemRegion
    | StartVring
    | StopVring
    | SetVringCall
    | SetVringErr
    | VringEnable
    | SetBackendReqFd
    | AllocateInflight
    | SetInflightFd
    | DiscardFds
    | Ignored
)
