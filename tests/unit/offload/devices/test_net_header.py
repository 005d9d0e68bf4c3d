"""virtio_net_hdr_v1 checks: examples of each rule, and properties over arbitrary headers."""

from __future__ import annotations

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from offload.devices import net_header as nh
from offload.virtio import features as vf

IPV4, IPV6 = b"\x08\x00", b"\x86\xdd"
ALL = nh.Offloads(csum=True, tso4=True, tso6=True)
MAX = 1518


def hdr(
    flags: int = 0,
    gso: int = 0,
    hdr_len: int = 0,
    gso_size: int = 0,
    start: int = 0,
    offset: int = 0,
) -> bytes:
    return nh.HDR.pack(flags, gso, hdr_len, gso_size, start, offset, 0)


TSO4 = hdr(nh.F_NEEDS_CSUM, nh.GSO_TCPV4, 54, 1460, 34, 16)


def test_offloads_follow_the_negotiated_bits_and_their_dependencies() -> None:
    acked = sum(vf.bit(b) for b in (vf.NET_CSUM, vf.NET_HOST_TSO4, vf.NET_GUEST_TSO6))
    assert nh.Offloads.host(acked) == nh.Offloads(csum=True, tso4=True, tso6=False)
    # GUEST_TSO6 without GUEST_CSUM means nothing (the spec makes it depend on it)
    assert nh.Offloads.guest(acked) == nh.Offloads()
    assert nh.Offloads.host(vf.bit(vf.NET_HOST_TSO4)) == nh.Offloads()


@pytest.mark.parametrize(
    ("header", "length", "ethertype", "offloads", "reason"),
    [
        (hdr(), 60, IPV4, nh.Offloads(), None),
        (hdr(nh.F_NEEDS_CSUM, 0, 0, 0, 34, 16), 60, IPV4, nh.Offloads(), "flags"),
        (hdr(nh.F_NEEDS_CSUM, 0, 0, 0, 34, 16), 60, IPV4, ALL, None),
        (hdr(nh.F_DATA_VALID), 60, IPV4, ALL, "flags"),  # RX only
        (hdr(nh.F_RSC_INFO), 60, IPV4, ALL, "flags"),
        (hdr(nh.F_NEEDS_CSUM, 0, 0, 0, 34, 16), 51, IPV4, ALL, "csum"),  # 34+16+2 > 51
        (hdr(nh.F_NEEDS_CSUM, 0, 0, 0, 10, 2), 60, IPV4, ALL, "csum"),  # inside ethernet
        (TSO4, 64_254, IPV4, ALL, None),
        (TSO4, 64_254, IPV4, nh.Offloads(csum=True), "gso_type"),
        (TSO4, 64_254, IPV6, ALL, "gso_ethertype"),
        (hdr(nh.F_NEEDS_CSUM, nh.GSO_TCPV6, 74, 1440, 54, 16), 64_274, IPV6, ALL, None),
        (hdr(0, nh.GSO_TCPV4, 54, 1460), 64_254, IPV4, ALL, "gso"),  # no NEEDS_CSUM
        (hdr(nh.F_NEEDS_CSUM, nh.GSO_TCPV4, 54, 0, 34, 16), 64_254, IPV4, ALL, "gso"),
        (
            hdr(nh.F_NEEDS_CSUM, nh.GSO_TCPV4 | nh.GSO_ECN, 54, 1460, 34, 16),
            9000,
            IPV4,
            ALL,
            "gso_type",
        ),
        (hdr(nh.F_NEEDS_CSUM, nh.GSO_UDP, 42, 1472, 34, 6), 9000, IPV4, ALL, "gso_type"),
        (hdr(nh.F_NEEDS_CSUM, nh.GSO_UDP_L4, 42, 1472, 34, 6), 9000, IPV4, ALL, "gso_type"),
        (hdr(0, 0, 61), 60, IPV4, ALL, "hdr_len"),
        (hdr(), MAX + 1, IPV4, ALL, "oversize"),  # no GSO: the MTU's frame at most
        (TSO4, nh.MAX_GSO_FRAME + 1, IPV4, ALL, "oversize"),
    ],
)
def test_tx_rules(
    header: bytes, length: int, ethertype: bytes, offloads: nh.Offloads, reason: str | None
) -> None:
    assert nh.check_tx(header, length, ethertype, offloads, max_frame=MAX) == reason


def test_rx_takes_data_valid_only_with_guest_csum() -> None:
    assert nh.check_rx(hdr(nh.F_DATA_VALID), 60, IPV4, ALL, max_frame=MAX) is None
    assert nh.check_rx(hdr(nh.F_DATA_VALID), 60, IPV4, nh.Offloads(), max_frame=MAX) == "flags"
    view = memoryview(bytearray(hdr(nh.F_DATA_VALID)))
    nh.clear_data_valid(view, nh.Offloads())
    assert nh.check_rx(view, 60, IPV4, nh.Offloads(), max_frame=MAX) is None
    view = memoryview(bytearray(hdr(nh.F_DATA_VALID)))
    nh.clear_data_valid(view, ALL)  # the guest takes it: left alone
    assert view[0] == nh.F_DATA_VALID


offloads = st.builds(nh.Offloads, csum=st.booleans(), tso4=st.booleans(), tso6=st.booleans())
u16 = st.one_of(st.integers(0, 80), st.integers(0, 0xFFFF), st.sampled_from([14, 16, 34, 54]))
# Headers near the valid ones (each field from a small set or anything), and raw bytes.
headers = st.one_of(
    st.binary(min_size=12, max_size=12),
    st.builds(
        hdr,
        st.sampled_from([0, 0, 1, 1, 1, 2, 3, 4, 0xFF]),
        st.sampled_from([0, 0, 1, 1, 4, 4, 3, 5, 0x81, 0x84, 2]),
        u16,
        u16,
        u16,
        u16,
    ),
)


@settings(max_examples=2000, deadline=None)
@given(
    header=headers,
    length=st.one_of(st.integers(0, 70_000), st.integers(40, 100)),
    ethertype=st.sampled_from([IPV4, IPV6, b"\x08\x06", b"\x81\x00"]),
    negotiated=offloads,
    rx=st.booleans(),
)
def test_an_accepted_header_keeps_every_rule(
    header: bytes, length: int, ethertype: bytes, negotiated: nh.Offloads, rx: bool
) -> None:
    check = nh.check_rx if rx else nh.check_tx
    reason = check(header, length, ethertype, negotiated, max_frame=MAX)  # never raises
    event("accepted" if reason is None else reason)
    if reason is not None:
        return
    flags, gso, hdr_len, gso_size, start, offset, _ = nh.HDR.unpack(header)
    allowed = (nh.F_NEEDS_CSUM | nh.F_DATA_VALID) if rx else nh.F_NEEDS_CSUM
    assert not flags & ~allowed
    assert not flags or negotiated.csum
    if flags & nh.F_NEEDS_CSUM:
        assert start >= 14 and start + offset + 2 <= length
    assert hdr_len <= length
    if gso == nh.GSO_NONE:
        assert length <= MAX
    else:
        assert (gso, ethertype) in ((nh.GSO_TCPV4, IPV4), (nh.GSO_TCPV6, IPV6))
        assert negotiated.allows_gso(gso) and flags & nh.F_NEEDS_CSUM and gso_size
        assert length <= nh.MAX_GSO_FRAME


@given(header=st.binary(min_size=12, max_size=12))
def test_with_nothing_negotiated_only_an_empty_offload_passes(header: bytes) -> None:
    ok = nh.check_tx(header, 100, IPV4, nh.Offloads(), max_frame=MAX) is None
    assert not ok or header[0] == header[1] == 0
