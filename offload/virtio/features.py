"""virtio feature bits (OASIS virtio 1.2 §6 and the device sections).

Constants are bit *numbers*; ``bit(n)`` turns one into a mask and
``has(features, n)`` tests a negotiated set, so callers never hand-roll
shifts.  Transport (device-independent) bits are 24..41; device bits are
0..23 and mean different things per device type, hence the ``BLK_`` and
``NET_`` prefixes.  vhost-user's own PROTOCOL_FEATURES bit (30) belongs to
the vhost-user layer, not here.
"""

from __future__ import annotations

__all__ = [
    "ACCESS_PLATFORM",
    "ANY_LAYOUT",
    "BLK_BLK_SIZE",
    "BLK_CONFIG_WCE",
    "BLK_DISCARD",
    "BLK_FLUSH",
    "BLK_GEOMETRY",
    "BLK_LIFETIME",
    "BLK_MQ",
    "BLK_RO",
    "BLK_SECURE_ERASE",
    "BLK_SEG_MAX",
    "BLK_SIZE_MAX",
    "BLK_TOPOLOGY",
    "BLK_WRITE_ZEROES",
    "IN_ORDER",
    "NOTIFICATION_DATA",
    "NET_CSUM",
    "NET_CTRL_GUEST_OFFLOADS",
    "NET_CTRL_MAC_ADDR",
    "NET_CTRL_RX",
    "NET_CTRL_VLAN",
    "NET_CTRL_VQ",
    "NET_GUEST_ANNOUNCE",
    "NET_GUEST_CSUM",
    "NET_GUEST_ECN",
    "NET_GUEST_TSO4",
    "NET_GUEST_TSO6",
    "NET_GUEST_UFO",
    "NET_HOST_ECN",
    "NET_HOST_TSO4",
    "NET_HOST_TSO6",
    "NET_HOST_UFO",
    "NET_MAC",
    "NET_MQ",
    "NET_MRG_RXBUF",
    "NET_MTU",
    "NET_STATUS",
    "NOTIFY_ON_EMPTY",
    "ORDER_PLATFORM",
    "RING_EVENT_IDX",
    "RING_INDIRECT_DESC",
    "RING_PACKED",
    "RING_RESET",
    "SR_IOV",
    "VERSION_1",
    "bit",
    "has",
]

# Transport features (§6).
NOTIFY_ON_EMPTY = 24  # legacy only; not offered by virtio 1.x devices
ANY_LAYOUT = 27  # implied by VERSION_1
RING_INDIRECT_DESC = 28
RING_EVENT_IDX = 29
VERSION_1 = 32
ACCESS_PLATFORM = 33
RING_PACKED = 34
IN_ORDER = 35
ORDER_PLATFORM = 36
SR_IOV = 37
NOTIFICATION_DATA = 38
RING_RESET = 40

# virtio-blk (§5.2.3).
BLK_SIZE_MAX = 1
BLK_SEG_MAX = 2
BLK_GEOMETRY = 4
BLK_RO = 5
BLK_BLK_SIZE = 6
BLK_FLUSH = 9
BLK_TOPOLOGY = 10
BLK_CONFIG_WCE = 11
BLK_MQ = 12
BLK_DISCARD = 13
BLK_WRITE_ZEROES = 14
BLK_LIFETIME = 15
BLK_SECURE_ERASE = 16

# virtio-net (§5.1.3).
NET_CSUM = 0
NET_GUEST_CSUM = 1
NET_CTRL_GUEST_OFFLOADS = 2
NET_MTU = 3
NET_MAC = 5
NET_GUEST_TSO4 = 7
NET_GUEST_TSO6 = 8
NET_GUEST_ECN = 9
NET_GUEST_UFO = 10
NET_HOST_TSO4 = 11
NET_HOST_TSO6 = 12
NET_HOST_ECN = 13
NET_HOST_UFO = 14
NET_MRG_RXBUF = 15
NET_STATUS = 16
NET_CTRL_VQ = 17
NET_CTRL_RX = 18
NET_CTRL_VLAN = 19
NET_GUEST_ANNOUNCE = 21
NET_MQ = 22
NET_CTRL_MAC_ADDR = 23


def bit(n: int) -> int:
    """The mask of feature bit ``n``."""
    return 1 << n


def has(features: int, n: int) -> bool:
    """Whether feature bit ``n`` is set in ``features``."""
    return bool(features >> n & 1)
