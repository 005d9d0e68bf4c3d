"""The hook a virtio-net device calls on its NIC path.

The device hands every ethernet frame the guest transmits (without the
virtio-net header) to ``classify_tx`` and acts on the verdict: FORWARD sends
it on to the TAP (as the hook left it: a hook may rewrite the frame in place,
which is how the card routes between subnets), CONSUMED and DROP end it
there.  ``attach`` gives the hook a thread-safe ``deliver`` function that
queues an ethernet frame for the guest's RX queue, which is how card
services answer.  ``ForwardAll`` is the hook of a NIC without card services.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol

__all__ = ["ForwardAll", "NicHook", "TxVerdict"]


class TxVerdict(enum.Enum):
    """What the device does with one frame the guest transmitted."""

    FORWARD = "forward"
    CONSUMED = "consumed"
    DROP = "drop"


class NicHook(Protocol):
    """Card-side processing of one NIC's traffic."""

    def classify_tx(self, frame: bytearray) -> TxVerdict:
        """Classify one ethernet frame the guest transmitted (no virtio header)."""
        ...

    def attach(self, deliver: Callable[[bytes], None]) -> None:
        """Give the hook a thread-safe function that queues a frame for guest RX."""
        ...


class ForwardAll:
    """The trivial ``NicHook``: every frame goes to the TAP, nothing is answered."""

    def classify_tx(self, frame: bytearray) -> TxVerdict:
        return TxVerdict.FORWARD

    def attach(self, deliver: Callable[[bytes], None]) -> None:
        pass
