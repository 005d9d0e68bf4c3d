"""virtio-net headers and frames: ``NetDevice.process_queue`` on a fuzzer-built ring.

The input is ``u16 length, frame`` followed by a ring (``fuzz.rings``).  Ring
flag bits: 1 serves the ring as RX (ring 0; the frame is delivered to the
guest) instead of TX (ring 1; the guest's chains are the frames), 2 makes
the driver accept MRG_RXBUF, 3 puts the NIC's card services (DHCP, ARP,
metadata, anti-spoofing) on the TX path instead of a plain wire, 4 delivers
the RX frame through the TAP instead of the card's injection queue.  A
``SOCK_SEQPACKET`` socket pair stands in for the TAP.

``process_queue`` must never raise; every frame written to the TAP must be
a whole ethernet frame no longer than the device's ``max_frame``; the card
services must not fail (``fuzz.nic``); nothing may touch memory outside the
regions (``fuzz.guest``).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Final

from fuzz.guest import FuzzRam
from fuzz.nic import NIC_MAC, Nic, check_reply, eth, raise_logged_failures
from fuzz.rings import BASE, RingBuilder, decode
from offload.devices.net import NetDevice
from offload.network.hook import ForwardAll, NicHook
from offload.virtio import features as vf
from offload.virtio.queue import SplitQueue

__all__ = ["MAX_LEN", "make", "seeds"]

MAX_LEN: Final = 12288
F_RX: Final = 2
F_MRG_RXBUF: Final = 4
F_SERVICES: Final = 8
F_VIA_TAP: Final = 16
ETH_HLEN: Final = 14
_LEN = struct.Struct("<H")
_VNET_HDR = bytes(12)


def make() -> Callable[[bytes], None]:
    ram = FuzzRam()
    tap, wire = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    tap.setblocking(False)
    wire.setblocking(False)

    def drain_wire(device: NetDevice) -> None:
        while True:
            try:
                frame = wire.recv(1 << 17)
            except BlockingIOError:
                return
            if not ETH_HLEN <= len(frame) <= device.max_frame:
                raise AssertionError(f"a frame of {len(frame)} bytes went to the TAP")

    def one(data: bytes) -> None:
        if len(data) < _LEN.size:
            return
        (n,) = _LEN.unpack_from(data)
        frame = data[_LEN.size : _LEN.size + n]
        ring = decode(data[_LEN.size + n :])
        if ring is None:
            return
        ram.load(ring.image)
        nic = Nic() if ring.flags & F_SERVICES else None
        hook: NicHook = nic.services if nic is not None else ForwardAll()
        device = NetDevice(mac=NIC_MAC, tap_fds=[tap.fileno()], hook=hook, queue_size=128)
        try:
            offered = device.features()
            minimal = (
                vf.bit(vf.VERSION_1) | vf.bit(vf.RING_INDIRECT_DESC) | vf.bit(vf.RING_EVENT_IDX)
            )
            if not ring.flags & F_MRG_RXBUF:
                offered &= minimal
            device.ack_features(offered)
            index = 0 if ring.flags & F_RX else 1
            device.queue_enabled(index, True)
            if index == 0 and frame:
                if ring.flags & F_VIA_TAP:
                    wire.send(frame)
                else:
                    device.deliver(frame)
            queue = SplitQueue(
                ram.mem,
                size=ring.size,
                desc_gpa=ring.desc_gpa,
                avail_gpa=ring.avail_gpa,
                used_gpa=ring.used_gpa,
                event_idx=ring.event_idx,
            )
            queue.last_avail_idx = ring.last_avail
            queue.used_idx = ring.used_idx
            device.process_queue(index, queue)
            device.process_queue(index, queue)  # a second wake-up: pending frames, rewound rings
            raise_logged_failures()
            if device.stats().errors["hook"]:
                raise AssertionError("the NIC hook failed")
            if nic is not None:
                for reply in nic.replies:
                    check_reply(reply)
            drain_wire(device)
            # Whatever the TAP still holds for RX is read by the next input's device.
            while True:
                try:
                    tap.recv(1 << 17)
                except BlockingIOError:
                    break
        finally:
            device.close()
        ram.check_canaries()

    return one


def _input(frame: bytes, ring: RingBuilder) -> bytes:
    return _LEN.pack(len(frame)) + frame + ring.encode()


def seeds() -> dict[str, bytes]:
    a, b = BASE + 0x1000, 0x2_0000
    out: dict[str, bytes] = {}
    ping = eth(
        bytes.fromhex("4500001c0001400040010000") + bytes((10, 8, 0, 5, 10, 8, 0, 9)) + bytes(8)
    )
    arp_req = eth(
        struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, NIC_MAC, bytes((10, 8, 0, 5)), bytes(6),
                    bytes((10, 8, 0, 1))), 0x0806, dst=b"\xff" * 6)  # fmt: skip
    for name, frame, flags in (
        ("tx_one_buffer", ping, 0),
        ("tx_arp_to_services", arp_req, F_SERVICES),
    ):
        ring = RingBuilder(size=16, flags=flags)
        ring.put(a, _VNET_HDR + frame)
        ring.chain([(a, 12 + len(frame), False)])
        out[name] = _input(b"", ring)
    ring = RingBuilder(size=16)
    ring.put(a, _VNET_HDR)
    ring.put(b, ping)
    ring.chain([(a, 12, False), (b, len(ping), False)])
    ring.put(a + 64, bytes((1, 0)) + bytes(10) + ping)  # NEEDS_CSUM, never offered
    ring.chain([(a + 64, 12 + len(ping), False)])
    out["tx_split_header_and_offload_flags"] = _input(b"", ring)
    ring = RingBuilder(size=16, flags=F_RX)
    ring.chain([(b, 1526, True)])
    out["rx_one_buffer"] = _input(ping, ring)
    ring = RingBuilder(size=16, flags=F_RX | F_MRG_RXBUF | F_VIA_TAP)
    ring.chain([(b, 40, True)])
    ring.chain([(b + 64, 40, True)])
    ring.chain([(b + 128, 1500, True)])
    out["rx_mergeable_via_tap"] = _input(ping + bytes(60), ring)
    ring = RingBuilder(size=16, flags=F_RX)
    ring.chain([(b, 20, True)])
    out["rx_too_small"] = _input(ping, ring)
    return out
