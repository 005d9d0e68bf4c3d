"""The device interface the vhost-user back-end relies on.

Modelled on rust-vmm's ``VhostUserBackend`` trait: the server owns the
socket, the protocol, the memory table, the rings' eventfds and the queue
threads; a device answers a few synchronous questions and drains a queue when
its worker wakes up.  ``offload.devices.base.DeviceBackend`` implements every
member with the defaults documented here, so a device only overrides what it
needs.

Negotiation (asked by the sans-I/O ``VhostUserBackend`` on the protocol thread):

* ``num_queues`` and ``max_queue_size``: the ring count GET_QUEUE_NUM reports
  and the largest ring SET_VRING_NUM may ask for;
* ``features()``: device *and* transport feature bits (VERSION_1, EVENT_IDX,
  ...); vhost-user's PROTOCOL_FEATURES bit is added by the protocol;
  ``ack_features(bits)`` is told what the front-end accepted;
* ``protocol_features()``: the vhost-user protocol features this device wants
  offered, a subset of ``backend.SUPPORTED_PROTOCOL_FEATURES``.  It matters:
  what a back-end offers changes what QEMU does (see ``devices/net.py``);
* ``get_config(offset, size)`` / ``set_config(offset, data)``: config space.
  Default: the device's config struct sliced to ``[offset, offset+size)`` and
  zero-padded past its end, so an oversized read never fails; writes are
  ignored.  Raising refuses the access (an empty GET_CONFIG reply, a NACK).

Data path (asked by the queue workers, one thread per started ring):

* ``process_queue(index, queue)`` drains ring ``index``, completes what it
  took and returns whether the driver should be interrupted.  It never raises
  for guest errors; a broken ring sets ``needs_reset`` and the worker stops
  calling the device for that ring until the front-end restarts it, when
  ``reset()`` runs (once no ring is running) and features are acked again;
* ``queue_events(index)``: extra fds (beyond the kick eventfd) whose
  readability should wake the ring's worker, asked before every sleep.  A
  net device returns its TAP fd for an RX ring that has buffers to fill, and
  nothing when it has none (so a readable TAP cannot spin the worker).
  Default: none;
* ``queue_timeout(index)``: seconds after which the worker runs the ring
  again without any event (QoS throttling), 0 for never.  Default: 0;
* ``queue_enabled(index, enabled)``: SET_VRING_ENABLE (rings start enabled
  without PROTOCOL_FEATURES).  Default: recorded, nothing else (a block
  device serves a ring from its first kick, as libvhost-user does).

Notifications: ``set_config_changed(callback)`` is called by the server with a
function the device calls when its config space changed (online resize, link
status); the server turns it into CONFIG_CHANGE_MSG on the back-end channel.
``None`` unhooks it when the server closes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from offload.virtio.queue import SplitQueue

__all__ = ["DeviceModel", "VhostUserDevice"]


class DeviceModel(Protocol):
    """What the sans-I/O protocol asks the device synchronously."""

    @property
    def num_queues(self) -> int: ...

    @property
    def max_queue_size(self) -> int: ...

    def features(self) -> int: ...

    def protocol_features(self) -> int: ...

    def ack_features(self, features: int) -> None: ...

    def get_config(self, offset: int, size: int) -> bytes: ...

    def set_config(self, offset: int, data: bytes) -> None: ...


class VhostUserDevice(DeviceModel, Protocol):
    """The whole contract the server drives (``offload.devices.base`` implements it)."""

    @property
    def needs_reset(self) -> bool: ...

    def reset(self) -> None: ...

    def process_queue(self, index: int, queue: SplitQueue) -> bool:
        """Process everything available on ``queue``; True if the driver should be notified."""
        ...

    def queue_events(self, index: int) -> Sequence[int]: ...

    def queue_timeout(self, index: int) -> float: ...

    def quiesce_queue(self, index: int, queue: SplitQueue) -> bool: ...

    def queue_enabled(self, index: int, enabled: bool) -> None: ...

    def set_config_changed(self, callback: Callable[[], None] | None) -> None: ...
