"""The base class of every device behind the vhost-user server.

``DeviceBackend`` implements ``offload.vhost_user.device.VhostUserDevice``
(rust-vmm's ``VhostUserBackend`` trait, which documents every member) with
its defaults, so a device overrides only what it has:

* ``features()`` returns device *and* transport bits (VERSION_1, INDIRECT,
  EVENT_IDX, ...); ``ack_features`` stores what the driver accepted in
  ``acked_features``.
* ``protocol_features()`` defaults to ``DEFAULT_PROTOCOL_FEATURES`` (MQ,
  REPLY_ACK, CONFIG, BACKEND_REQ, CONFIGURE_MEM_SLOTS); a device that needs
  more (inflight tracking) or must offer less (virtio-net under QEMU) says so.
* ``get_config`` has a documented default: the bytes of ``config_bytes()``
  (the device's config struct, little-endian) sliced to ``[offset,
  offset+size)`` and zero-padded past its end, so an oversized read from an
  older or newer driver never fails.  ``set_config`` ignores writes unless a
  device overrides it.
* ``process_queue(index, queue)`` pops every available chain, completes each
  one, and returns whether the driver should get an interrupt (the queue's
  ``should_notify``), so a batch costs one notification.  It never raises for
  guest errors: malformed requests complete with an error status, and a
  broken ring sets ``needs_reset`` (the server then reports
  DEVICE_NEEDS_RESET and stops calling the device until ``reset()``).
* ``queue_events``, ``queue_timeout`` and ``queue_enabled`` default to no
  extra fds, no timeout, and recording the flag in ``enabled_queues``;
  ``quiesce_queue`` (a stopping ring waits for its requests in flight, for
  devices whose engine completes asynchronously) to nothing.
* ``set_config_changed`` stores the server's callback; a device calls
  ``notify_config_changed`` to request a config-change interrupt, e.g. after
  an online resize.

Queue threads call ``process_queue`` for different indices concurrently; a
device keeps per-queue state (counters) indexed by queue so that they never
share mutable data.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Sequence
from typing import Final

from offload.vhost_user.messages import ProtocolFeature
from offload.virtio.queue import SplitQueue

__all__ = ["DEFAULT_PROTOCOL_FEATURES", "DeviceBackend", "DeviceStatus"]

DEFAULT_PROTOCOL_FEATURES: Final = int(
    ProtocolFeature.MQ
    | ProtocolFeature.REPLY_ACK
    | ProtocolFeature.BACKEND_REQ
    | ProtocolFeature.CONFIG
    | ProtocolFeature.CONFIGURE_MEM_SLOTS
)


class DeviceStatus(enum.Enum):
    """Whether the device can keep serving its queues."""

    OK = "ok"
    NEEDS_RESET = "needs_reset"


class DeviceBackend(abc.ABC):
    """A virtio device served over vhost-user."""

    num_queues: int
    max_queue_size: int

    def __init__(self, *, num_queues: int, max_queue_size: int) -> None:
        self.num_queues = num_queues
        self.max_queue_size = max_queue_size
        self.acked_features = 0
        self.status = DeviceStatus.OK
        self.needs_reset_reason = ""
        self.enabled_queues = [False] * num_queues
        self._config_changed: Callable[[], None] | None = None

    @abc.abstractmethod
    def features(self) -> int:
        """Device and transport feature bits the device offers."""

    def protocol_features(self) -> int:
        """vhost-user protocol features to offer (see the module docstring)."""
        return DEFAULT_PROTOCOL_FEATURES

    def ack_features(self, features: int) -> None:
        """Record the features the driver accepted (a subset of ``features()``)."""
        self.acked_features = features & self.features()

    def config_bytes(self) -> bytes:
        """The whole config struct; the default device has none."""
        return b""

    def get_config(self, offset: int, size: int) -> bytes:
        """``size`` bytes of config space at ``offset``, zero-padded past its end."""
        if offset < 0 or size < 0:
            raise ValueError(f"bad config window {offset}+{size}")
        chunk = self.config_bytes()[offset : offset + size]
        return chunk + bytes(size - len(chunk))

    def set_config(self, offset: int, data: bytes) -> None:  # noqa: B027 - documented no-op
        """Driver writes to config space; ignored unless a device overrides it."""

    @abc.abstractmethod
    def process_queue(self, index: int, queue: SplitQueue) -> bool:
        """Drain queue ``index``; return True if the driver should be notified."""

    def queue_events(self, index: int) -> Sequence[int]:
        """Extra fds that should wake ring ``index``'s worker; none by default."""
        return ()

    def queue_timeout(self, index: int) -> float:
        """Seconds until ring ``index`` should run again without a kick (0: never)."""
        return 0.0

    def quiesce_queue(self, index: int, queue: SplitQueue) -> bool:
        """Ring ``index`` is stopping: finish what is in flight on it (none by default).

        Called on the ring's own thread after its last ``process_queue``;
        returns whether the driver should be notified of what it completed.
        """
        return False

    def queue_enabled(self, index: int, enabled: bool) -> None:
        """SET_VRING_ENABLE for ring ``index``: recorded in ``enabled_queues``."""
        self.enabled_queues[index] = enabled

    @property
    def needs_reset(self) -> bool:
        return self.status is DeviceStatus.NEEDS_RESET

    def mark_needs_reset(self, reason: str) -> None:
        """The guest broke a ring: stop serving until the driver resets us."""
        self.status = DeviceStatus.NEEDS_RESET
        self.needs_reset_reason = reason

    def reset(self) -> None:
        """The driver reset the device (rings stopped, features renegotiated)."""
        self.status = DeviceStatus.OK
        self.needs_reset_reason = ""
        self.acked_features = 0

    def set_config_changed(self, callback: Callable[[], None] | None) -> None:
        """The server's config-change callback (None: unhooked)."""
        self._config_changed = callback

    def notify_config_changed(self) -> None:
        """Ask the server for a config-change interrupt, if it wired the hook."""
        callback = self._config_changed
        if callback is not None:
            callback()
