"""``struct virtio_net_hdr_v1`` (virtio 1.2 §5.1.6): what offloads a header asks for, and checks.

Every frame on a virtio-net ring and on the TAP (opened with ``IFF_VNET_HDR``
and a 12-byte header size) starts with this header, little-endian:
``flags`` (u8), ``gso_type`` (u8), ``hdr_len``, ``gso_size``, ``csum_start``,
``csum_offset``, ``num_buffers`` (u16 each).  The checks are pure functions
of the header bytes, the frame length and the negotiated offloads, so they
are tested without rings or a TAP.

``check_tx`` (a header the guest wrote) returns ``None`` for a header the
device may pass to the TAP, else the name of the counter to bump; the frame
is then dropped.  In order:

1. ``flags``: only NEEDS_CSUM, and only with VIRTIO_NET_F_CSUM negotiated
   (DATA_VALID and RSC_INFO are for the device to set on RX);
2. ``gso_type``: NONE, or TCPV4/TCPV6 with HOST_TSO4/HOST_TSO6 negotiated,
   no ECN bit (HOST_ECN is not offered), never UDP/UDP_L4 (UFO, USO are not
   offered); a GSO frame must also ask for NEEDS_CSUM, give a non-zero
   ``gso_size`` and carry the ethertype of its type (IPv4 for TCPV4, IPv6
   for TCPV6);
3. NEEDS_CSUM: ``csum_start + csum_offset + 2`` (the 16-bit checksum field)
   lies inside the frame and ``csum_start`` is past the ethernet header;
4. ``hdr_len``: at most the frame's length (a hint, Linux sets it to the
   linear part of its buffer, so no lower bound);
5. length: a frame without GSO is at most ``max_frame`` (the MTU plus
   ethernet and VLAN headers), a GSO frame at most ``MAX_GSO_FRAME``.

``check_rx`` does the same for a header the TAP wrote, against what the
guest negotiated (GUEST_CSUM, GUEST_TSO4/6; the TAP was told the same with
``TUNSETOFFLOAD``, so a mismatch is a bug or a race with a renegotiation):
DATA_VALID may come back with GUEST_CSUM; without it the flags are cleared
(the frame is complete: the TAP computed every checksum).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from offload.virtio import features as vf

__all__ = [
    "F_DATA_VALID",
    "F_NEEDS_CSUM",
    "F_RSC_INFO",
    "GSO_ECN",
    "GSO_NONE",
    "GSO_TCPV4",
    "GSO_TCPV6",
    "GSO_UDP",
    "GSO_UDP_L4",
    "HDR",
    "HDR_LEN",
    "MAX_GSO_FRAME",
    "Offloads",
    "check_rx",
    "check_tx",
    "clear_data_valid",
]

HDR: Final = struct.Struct("<BBHHHHH")
HDR_LEN: Final = HDR.size  # 12
F_NEEDS_CSUM: Final = 1
F_DATA_VALID: Final = 2
F_RSC_INFO: Final = 4
GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_UDP: Final = 3
GSO_TCPV6: Final = 4
GSO_UDP_L4: Final = 5
GSO_ECN: Final = 0x80
ETH_HLEN: Final = 14
VLAN_HLEN: Final = 4
# The largest IP packet (64 KiB) behind an ethernet and a VLAN header.
MAX_GSO_FRAME: Final = 65535 + 40 + ETH_HLEN + VLAN_HLEN
_ETHERTYPE = {GSO_TCPV4: b"\x08\x00", GSO_TCPV6: b"\x86\xdd"}


@dataclass(frozen=True, slots=True)
class Offloads:
    """One direction's negotiated offloads: partial checksums, TCP segmentation."""

    csum: bool = False
    tso4: bool = False
    tso6: bool = False

    @classmethod
    def host(cls, acked: int) -> Offloads:
        """What the guest may send: CSUM, HOST_TSO4/6 (TSO only together with CSUM)."""
        csum = vf.has(acked, vf.NET_CSUM)
        return cls(
            csum=csum,
            tso4=csum and vf.has(acked, vf.NET_HOST_TSO4),
            tso6=csum and vf.has(acked, vf.NET_HOST_TSO6),
        )

    @classmethod
    def guest(cls, acked: int) -> Offloads:
        """What the guest takes: GUEST_CSUM, GUEST_TSO4/6 (TSO only with GUEST_CSUM)."""
        csum = vf.has(acked, vf.NET_GUEST_CSUM)
        return cls(
            csum=csum,
            tso4=csum and vf.has(acked, vf.NET_GUEST_TSO4),
            tso6=csum and vf.has(acked, vf.NET_GUEST_TSO6),
        )

    def allows_gso(self, gso_type: int) -> bool:
        return (gso_type == GSO_TCPV4 and self.tso4) or (gso_type == GSO_TCPV6 and self.tso6)


def _check(
    header: bytes | memoryview,
    length: int,
    ethertype: bytes,
    offloads: Offloads,
    max_frame: int,
    allowed_flags: int,
) -> str | None:
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, _ = HDR.unpack(header)
    if flags & ~allowed_flags or (flags & F_NEEDS_CSUM and not offloads.csum):
        return "flags"
    if gso_type != GSO_NONE:
        if not offloads.allows_gso(gso_type):
            return "gso_type"
        if not flags & F_NEEDS_CSUM or gso_size == 0:
            return "gso"
        if ethertype != _ETHERTYPE[gso_type]:
            return "gso_ethertype"
    if flags & F_NEEDS_CSUM and (csum_start < ETH_HLEN or csum_start + csum_offset + 2 > length):
        return "csum"
    if hdr_len > length:
        return "hdr_len"
    if length > (max_frame if gso_type == GSO_NONE else MAX_GSO_FRAME):
        return "oversize"
    return None


def check_tx(
    header: bytes | memoryview,
    length: int,
    ethertype: bytes,
    offloads: Offloads,
    *,
    max_frame: int,
) -> str | None:
    """``None`` if the guest's header may go to the TAP with its frame, else why not.

    ``length`` is the frame's (without the header), ``ethertype`` its bytes 12..14.
    """
    return _check(header, length, ethertype, offloads, max_frame, F_NEEDS_CSUM)


def check_rx(
    header: bytes | memoryview,
    length: int,
    ethertype: bytes,
    offloads: Offloads,
    *,
    max_frame: int,
) -> str | None:
    """``None`` if the TAP's header may go to the guest with its frame, else why not."""
    allowed = F_NEEDS_CSUM | F_DATA_VALID if offloads.csum else 0
    return _check(header, length, ethertype, offloads, max_frame, allowed)


def clear_data_valid(header: memoryview, offloads: Offloads) -> None:
    """Clear DATA_VALID in a TAP's header when the guest did not negotiate GUEST_CSUM.

    The TAP sets it for frames whose checksum the kernel already verified,
    whatever its offload flags; such a frame is complete.
    """
    if not offloads.csum and header[0] & F_DATA_VALID:
        header[0] &= ~F_DATA_VALID & 0xFF
