"""virtio-net device: header handling, mergeable RX filling, hostile rings, the NIC hook.

The device runs in-process over ``ringbuilder`` rings (RX ring 0, TX ring 1)
and a ``SOCK_DGRAM`` socketpair standing in for the TAP: one datagram is one
frame, as on a TAP fd.  Property tests throw arbitrary descriptor tables and
avail rings at both rings and check that the device never raises, never
writes outside the ring and the writable buffers (canaries), and completes
every head it consumed.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Iterator
from ipaddress import IPv6Interface
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offload.devices.net import CONFIG, HDR_LEN, S_LINK_UP, NetDevice
from offload.network.hook import NicHook, TxVerdict
from offload.network.services import NicServices
from offload.virtio import features as vf
from offload.virtio.chain import F_NEXT, F_WRITE
from tests.unit.offload.network.guest import (
    CARD_MAC,
    NIC_IP6,
    PEER_IP6,
    ipv6,
    nic_config,
    tcp_frame,
)
from tests.unit.offload.ringbuilder import Buf, DriverRing, GuestRam

MAC = bytes.fromhex("525400123456")
HDR = struct.Struct("<BBHHHHH")
SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


OFFLOADS = sum(
    vf.bit(b)
    for b in (
        vf.NET_CSUM,
        vf.NET_GUEST_CSUM,
        vf.NET_HOST_TSO4,
        vf.NET_HOST_TSO6,
        vf.NET_GUEST_TSO4,
        vf.NET_GUEST_TSO6,
    )
)


class RecordingHook:
    def __init__(self, verdict: TxVerdict = TxVerdict.FORWARD) -> None:
        self.verdict = verdict
        self.seen: list[bytes] = []
        self.deliver: Callable[[bytes], None] | None = None

    def classify_tx(self, frame: bytes) -> TxVerdict:
        self.seen.append(frame)
        return self.verdict

    def attach(self, deliver: Callable[[bytes], None]) -> None:
        self.deliver = deliver


class TapOffloadRecorder:
    """Stands in for ``Tap.set_offloads``: records every TUNSETOFFLOAD the device asks for."""

    def __init__(self) -> None:
        self.calls: list[tuple[bool, bool, bool]] = []

    def __call__(self, *, csum: bool, tso4: bool, tso6: bool) -> None:
        self.calls.append((csum, tso4, tso6))


class Nic:
    """A device, its fake TAP (frames behind a 12-byte vnet header), driver rings RX 0, TX 1."""

    def __init__(
        self,
        *,
        mergeable: bool = True,
        hook: NicHook | None = None,
        offloads: int = 0,
        queue_size: int = 16,
    ) -> None:
        self.ram = GuestRam()
        self.wire, tap = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        tap.setblocking(False)
        self.wire.setblocking(False)
        self.wire.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.tap = tap
        self.hook: Any = hook if hook is not None else RecordingHook()
        self.tap_offloads = TapOffloadRecorder()
        self.dev = NetDevice(
            mac=MAC,
            tap_fds=[tap.fileno()],
            hook=self.hook,
            queue_size=queue_size,
            tap_offloads=self.tap_offloads,
        )
        acked = vf.bit(vf.VERSION_1) | (vf.bit(vf.NET_MRG_RXBUF) if mergeable else 0)
        self.dev.ack_features(acked | offloads)
        self.dev.queue_enabled(0, True)
        self.dev.queue_enabled(1, True)
        self.rx = DriverRing(self.ram, size=queue_size)
        half = self.ram.base_gpa + self.ram.region_size // 2
        self.tx = DriverRing(self.ram, size=queue_size, base_gpa=half)
        self.rxq = self.rx.device_queue()
        self.txq = self.tx.device_queue()

    def close(self) -> None:
        self.dev.close()
        self.wire.close()
        self.tap.close()
        self.ram.close()

    def post_rx(self, *sizes: int) -> list[tuple[int, int]]:
        """RX buffers of the given sizes; returns (head, gpa) per buffer."""
        out = []
        for size in sizes:
            gpa = self.rx.alloc(size)
            head = self.rx.add_chain([Buf(gpa, size, writable=True)])
            self.rx.publish(head)
            out.append((head, gpa))
        return out

    def send(self, frame: bytes, *, header: bytes | None = None, split: int = 0) -> int:
        data = (bytes(HDR_LEN) if header is None else header) + frame
        cut = split or len(data)
        bufs = []
        for off in range(0, len(data), cut):
            part = data[off : off + cut]
            bufs.append(Buf(self.tx.alloc(len(part), part), len(part)))
        head = self.tx.add_chain(bufs)
        self.tx.publish(head)
        return head

    def from_tap(self, frame: bytes, header: bytes = bytes(HDR_LEN)) -> None:
        """A frame the kernel hands the device, behind its vnet header."""
        self.wire.send(header + frame)

    def wire_raw(self) -> list[bytes]:
        """What the device wrote to the TAP: vnet header + frame each."""
        out = []
        while True:
            try:
                out.append(self.wire.recv(1 << 17))
            except BlockingIOError:
                return out

    def wire_frames(self) -> list[bytes]:
        raw = self.wire_raw()
        assert all(r[:HDR_LEN] == bytes(HDR_LEN) for r in raw)
        return [r[HDR_LEN:] for r in raw]


@pytest.fixture
def nic() -> Iterator[Nic]:
    n = Nic()
    yield n
    n.close()


def frame_of(n: int, seed: int = 1) -> bytes:
    return bytes((seed + i) & 0xFF for i in range(n))


# --------------------------------------------------------------------------- negotiation


def test_offers_only_what_it_implements(nic: Nic) -> None:
    offered = nic.dev.features()
    for bit in (vf.VERSION_1, vf.NET_MRG_RXBUF, vf.NET_MAC, vf.NET_STATUS, vf.NET_MTU):
        assert vf.has(offered, bit)
    for bit in (vf.NET_CSUM, vf.NET_HOST_TSO4, vf.NET_HOST_TSO6):
        assert vf.has(offered, bit)
    for bit in (vf.NET_GUEST_CSUM, vf.NET_GUEST_TSO4, vf.NET_GUEST_TSO6):
        assert vf.has(offered, bit)
    for bit in (vf.NET_CTRL_VQ, vf.NET_HOST_ECN, vf.NET_HOST_UFO, vf.NET_GUEST_UFO):
        assert not vf.has(offered, bit)
    assert not vf.has(offered, vf.NET_MQ)  # one pair
    assert nic.dev.num_queues == 2


def test_config_space_and_link_status(nic: Nic) -> None:
    mac, status, pairs, mtu, _speed, _duplex = CONFIG.unpack(nic.dev.get_config(0, CONFIG.size))
    assert (mac, status, pairs, mtu) == (MAC, S_LINK_UP, 1, 1500)
    fired: list[int] = []
    nic.dev.set_config_changed(lambda: fired.append(1))
    nic.dev.set_link(False)
    assert nic.dev.get_config(6, 2) == b"\0\0" and fired == [1]
    nic.dev.set_link(False)
    assert fired == [1]


def test_multiqueue_offers_mq_and_pairs_in_config() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    dev = NetDevice(mac=MAC, tap_fds=[a.fileno(), b.fileno()])
    try:
        assert vf.has(dev.features(), vf.NET_MQ) and dev.num_queues == 4
        assert CONFIG.unpack(dev.get_config(0, CONFIG.size))[2] == 2
    finally:
        dev.close()
        a.close()
        b.close()


# --------------------------------------------------------------------------- TX


@pytest.mark.parametrize("split", [0, 7, 12, 40])
def test_tx_strips_the_header_and_writes_the_frame(nic: Nic, split: int) -> None:
    frame = frame_of(60)
    head = nic.send(frame, split=split)
    nic.dev.process_queue(1, nic.txq)
    assert nic.wire_frames() == [frame]
    assert nic.tx.take_used() == [(head, 0)]
    assert nic.hook.seen == [frame]
    assert nic.dev.stats(rx=False).frames == 1


@pytest.mark.parametrize(
    ("verdict", "expected"), [(TxVerdict.CONSUMED, "consumed"), (TxVerdict.DROP, "drop")]
)
def test_tx_verdicts_other_than_forward_keep_frames_off_the_tap(
    verdict: TxVerdict, expected: str
) -> None:
    n = Nic(hook=RecordingHook(verdict))
    try:
        head = n.send(frame_of(60))
        n.dev.process_queue(1, n.txq)
        assert n.wire_frames() == []
        assert n.tx.take_used() == [(head, 0)]
        assert n.dev.stats().verdicts[expected] == 1
    finally:
        n.close()


def test_tx_malformed_chains_are_completed_and_counted(nic: Nic) -> None:
    short = nic.send(frame_of(5))
    # NEEDS_CSUM, but the driver did not negotiate CSUM
    offload = nic.send(frame_of(60), header=HDR.pack(1, 0, 0, 0, 14, 6, 0))
    huge = nic.send(frame_of(9000))
    gpa = nic.tx.alloc(64)
    writable = nic.tx.add_chain([Buf(gpa, 64, writable=True)])
    nic.tx.publish(writable)
    good = nic.send(frame_of(64))
    nic.dev.process_queue(1, nic.txq)
    assert [h for h, _ in nic.tx.take_used()] == [short, offload, huge, writable, good]
    assert nic.wire_frames() == [frame_of(64)]
    errors = nic.dev.stats().errors
    assert (errors["tx_short"], errors["tx_flags"], errors["tx_oversize"]) == (1, 1, 1)
    assert errors["tx_writable"] == 1


# --------------------------------------------------------------------------- RX


def test_rx_merges_buffers_and_sets_num_buffers(nic: Nic) -> None:
    bufs = nic.post_rx(100, 100, 100, 100)
    frame = frame_of(250)
    nic.from_tap(frame)
    assert nic.dev.process_queue(0, nic.rxq)
    used = nic.rx.take_used()
    assert [h for h, _ in used] == [h for h, _ in bufs[:3]]
    assert [n for _, n in used] == [100, 100, HDR_LEN + 250 - 200]
    data = b"".join(nic.ram.read(gpa, n) for (_, gpa), (_, n) in zip(bufs, used, strict=False))
    flags, gso, _, _, _, _, num_buffers = HDR.unpack(data[:HDR_LEN])
    assert (flags, gso, num_buffers) == (0, 0, 3)
    assert data[HDR_LEN:] == frame
    assert nic.ram.canaries_intact()


def test_rx_without_mergeable_needs_one_big_enough_buffer() -> None:
    n = Nic(mergeable=False)
    try:
        n.post_rx(50)
        n.from_tap(frame_of(100))  # does not fit: dropped, buffer kept
        n.from_tap(frame_of(20, seed=7))
        n.dev.process_queue(0, n.rxq)
        [(_head, used)] = n.rx.take_used()
        assert used == HDR_LEN + 20
        assert n.dev.stats().dropped["rx_too_big"] == 1
        data = n.ram.read(n.rx.data_gpa, used)
        assert HDR.unpack(data[:HDR_LEN])[6] == 1 and data[HDR_LEN:] == frame_of(20, seed=7)
    finally:
        n.close()


def test_rx_starves_without_buffers_and_resumes_with_the_same_frame(nic: Nic) -> None:
    nic.post_rx(64)
    frame = frame_of(300)
    nic.from_tap(frame)
    nic.dev.process_queue(0, nic.rxq)
    assert nic.rx.take_used() == []  # 64 bytes cannot hold it: given back, frame pending
    assert nic.dev.queue_events(0) == ()  # starved: the TAP must not wake the worker
    nic.post_rx(400)
    nic.dev.process_queue(0, nic.rxq)
    used = nic.rx.take_used()
    assert [n for _, n in used] == [64, HDR_LEN + 300 - 64]
    assert tap_events_again(nic)


def tap_events_again(nic: Nic) -> bool:
    return nic.tap.fileno() in nic.dev.queue_events(0)


def test_injected_frames_reach_rx_first(nic: Nic) -> None:
    assert nic.hook.deliver is not None
    nic.post_rx(2048, 2048)
    nic.from_tap(frame_of(60, seed=2))
    nic.hook.deliver(frame_of(42, seed=9))
    nic.dev.process_queue(0, nic.rxq)
    used = nic.rx.take_used()
    first = nic.ram.read(nic.rx.data_gpa, used[0][1])
    assert first[HDR_LEN:] == frame_of(42, seed=9)
    assert [n for _, n in used] == [HDR_LEN + 42, HDR_LEN + 60]


def test_disabled_rings_are_left_alone(nic: Nic) -> None:
    nic.dev.queue_enabled(1, False)
    head = nic.send(frame_of(60))
    assert not nic.dev.process_queue(1, nic.txq)
    assert nic.tx.take_used() == [] and nic.wire_frames() == []
    nic.dev.queue_enabled(1, True)
    nic.dev.process_queue(1, nic.txq)
    assert nic.tx.take_used() == [(head, 0)]


def test_avail_jump_marks_needs_reset(nic: Nic) -> None:
    nic.tx.set_avail_idx(100)
    assert not nic.dev.process_queue(1, nic.txq)
    assert nic.dev.needs_reset and nic.dev.stats().errors["ring"] == 1


# --------------------------------------------------------------------------- hostile rings

desc_addr = st.one_of(
    st.integers(0, 0x40_0000),
    st.sampled_from([0x10_0000, 0x1F_FFF0, 0x2F_FFFF, 0x30_0000, 2**64 - 8]),
)
descriptor = st.tuples(
    desc_addr,
    st.one_of(st.integers(0, 4096), st.sampled_from([0, 1, 11, 12, 2**32 - 1])),
    st.integers(0, 7),
    st.integers(0, 20),
)


@SETTINGS
@given(
    table=st.lists(descriptor, min_size=16, max_size=16),
    heads=st.lists(st.integers(0, 17), min_size=0, max_size=16),
    frames=st.lists(st.integers(0, 3000), max_size=6),
    ring=st.sampled_from([0, 1]),
    mergeable=st.booleans(),
    offloaded=st.booleans(),
    tap_header=st.binary(min_size=HDR_LEN, max_size=HDR_LEN),
)
def test_hostile_rings_never_crash_or_escape(
    table: list[tuple[int, int, int, int]],
    heads: list[int],
    frames: list[int],
    ring: int,
    mergeable: bool,
    offloaded: bool,
    tap_header: bytes,
) -> None:
    n = Nic(mergeable=mergeable, offloads=OFFLOADS if offloaded else 0)
    try:
        driver = n.rx if ring == 0 else n.tx
        queue = n.rxq if ring == 0 else n.txq
        for i, (addr, length, flags, nxt) in enumerate(table):
            driver.set_desc(i, addr, length, flags & (F_NEXT | F_WRITE | 4), nxt)
        driver.publish(*heads)
        for i, size in enumerate(frames):  # every other one behind an arbitrary header
            n.from_tap(frame_of(size), tap_header if i % 2 else bytes(HDR_LEN))
        for _ in range(2):
            n.dev.process_queue(ring, queue)  # never raises
        assert n.ram.canaries_intact()
        ring_end = driver.used_gpa + 6 + 8 * driver.size
        over_ring = any(
            addr < ring_end and driver.desc_gpa < addr + length for addr, length, _, _ in table
        )
        if n.dev.needs_reset or over_ring:
            # A buffer placed over the ring lets the guest scribble on its own
            # ring: what the used ring says then means nothing to the driver.
            return
        used = driver.take_used()
        assert all(0 <= h < 16 for h, _ in used)
        consumed = queue.last_avail_idx
        assert len(used) == consumed or (ring == 0 and len(used) <= consumed)
        if ring == 0:
            assert all(length <= 2**32 - 1 for _, length in used)
    finally:
        n.close()


@SETTINGS
@given(sizes=st.lists(st.integers(1, 700), min_size=1, max_size=12), frame=st.integers(14, 1500))
def test_mergeable_fill_matches_the_frame_for_any_buffer_sizes(
    sizes: list[int], frame: int
) -> None:
    n = Nic()
    try:
        bufs = n.post_rx(*sizes)
        data = frame_of(frame, seed=frame)
        n.from_tap(data)
        n.dev.process_queue(0, n.rxq)
        used = n.rx.take_used()
        if HDR_LEN + frame > sum(sizes):
            assert used == [] and n.rxq.last_avail_idx == 0  # waits, nothing consumed
            return
        got = b"".join(
            n.ram.read(gpa, length) for (_, gpa), (_, length) in zip(bufs, used, strict=False)
        )
        assert HDR.unpack(got[:HDR_LEN])[6] == len(used)
        assert got[HDR_LEN:] == data
        assert all(length <= size for size, (_, length) in zip(sizes, used, strict=False))
        assert n.ram.canaries_intact()
    finally:
        n.close()


def test_frames_never_leak_between_nics() -> None:
    a, b = Nic(), Nic()
    try:
        a.post_rx(2048)
        b.post_rx(2048)
        a.from_tap(frame_of(80, seed=3))
        a.dev.process_queue(0, a.rxq)
        b.dev.process_queue(0, b.rxq)
        assert len(a.rx.take_used()) == 1 and b.rx.take_used() == []
    finally:
        a.close()
        b.close()


def test_device_close_releases_its_eventfd() -> None:
    before = len(os.listdir("/proc/self/fd"))
    n = Nic()
    n.close()
    assert len(os.listdir("/proc/self/fd")) == before


# --------------------------------------------------------------------------- offloads

TSO_PAYLOAD = 44 * 1460  # 64,240 bytes: one TSO frame instead of 44


def tso_frame(*, src_ip: bytes = bytes([10, 8, 0, 5]), src_mac: bytes = MAC) -> tuple[bytes, bytes]:
    """A guest's TCP/IPv4 TSO frame (pseudo-header checksum only) and its vnet header."""
    payload = frame_of(TSO_PAYLOAD, seed=5)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        40 + len(payload),
        1,
        0x4000,
        64,
        6,
        0,
        src_ip,
        bytes([10, 8, 0, 9]),
    )
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x18, 65535, 0x1234, 0)
    frame = bytes(6) + src_mac + b"\x08\x00" + ip + tcp + payload
    header = HDR.pack(1, 1, 54, 1460, 34, 16, 0)  # NEEDS_CSUM, GSO_TCPV4
    return frame, header


def test_negotiated_guest_offloads_go_to_the_tap_and_reset_clears_them() -> None:
    n = Nic(offloads=OFFLOADS)
    try:
        assert n.tap_offloads.calls == [(True, True, True)]
        n.dev.ack_features(vf.bit(vf.VERSION_1) | vf.bit(vf.NET_GUEST_TSO4))  # no GUEST_CSUM
        assert n.tap_offloads.calls[-1] == (False, False, False)
        n.dev.ack_features(vf.bit(vf.VERSION_1) | vf.bit(vf.NET_GUEST_CSUM))
        assert n.tap_offloads.calls[-1] == (True, False, False)
        n.dev.reset()
        assert n.tap_offloads.calls[-1] == (False, False, False)
    finally:
        n.close()


def test_without_a_tap_to_tell_guest_offloads_are_not_offered() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    dev = NetDevice(mac=MAC, tap_fds=[a.fileno()])
    try:
        offered = dev.features()
        assert vf.has(offered, vf.NET_CSUM) and vf.has(offered, vf.NET_HOST_TSO4)
        assert not vf.has(offered, vf.NET_GUEST_CSUM) and not vf.has(offered, vf.NET_GUEST_TSO4)
    finally:
        dev.close()
        a.close()
        b.close()


@pytest.mark.parametrize("split", [0, 5000])
def test_a_tso_frame_goes_to_the_tap_whole_with_its_header(split: int) -> None:
    n = Nic(offloads=OFFLOADS, queue_size=16)
    try:
        frame, header = tso_frame()
        head = n.send(frame, header=header, split=split)
        n.dev.process_queue(1, n.txq)
        assert n.wire_raw() == [header + frame]
        assert n.tx.take_used() == [(head, 0)]
        assert n.dev.stats(rx=False).bytes == len(frame)
    finally:
        n.close()


@pytest.mark.parametrize("split", [0, 7, 12, 20])
def test_a_partial_checksum_header_split_across_buffers_is_checked_and_kept(split: int) -> None:
    n = Nic(offloads=OFFLOADS, queue_size=64)
    try:
        frame = frame_of(12) + b"\x08\x00" + frame_of(60)
        good = HDR.pack(1, 0, 0, 0, 34, 16, 0)
        bad = HDR.pack(1, 0, 0, 0, 34, 60, 0)  # checksum field past the end
        n.send(frame, header=good, split=split)
        n.send(frame, header=bad, split=split)
        n.dev.process_queue(1, n.txq)
        assert n.wire_raw() == [good + frame]
        assert n.dev.stats().errors["tx_csum"] == 1
    finally:
        n.close()


def test_offloads_the_guest_did_not_negotiate_are_dropped_and_counted(nic: Nic) -> None:
    frame, header = tso_frame()
    bad = nic.send(frame, header=header)  # no HOST_TSO4, no CSUM
    good = nic.send(frame_of(60))
    nic.dev.process_queue(1, nic.txq)
    assert [h for h, _ in nic.tx.take_used()] == [bad, good]
    assert nic.wire_frames() == [frame_of(60)]
    assert nic.dev.stats().errors["tx_flags"] == 1


def test_a_gso_frame_from_the_tap_spreads_over_buffers_with_num_buffers() -> None:
    n = Nic(offloads=OFFLOADS, queue_size=64)
    try:
        bufs = n.post_rx(*[2048] * 40)
        frame, _ = tso_frame()
        header = HDR.pack(1, 1, 54, 1460, 34, 16, 0)  # the kernel leaves num_buffers alone
        n.from_tap(frame, header)
        n.dev.process_queue(0, n.rxq)
        used = n.rx.take_used()
        need = HDR_LEN + len(frame)
        assert len(used) == -(-need // 2048) == 32
        assert [length for _, length in used] == [2048] * 31 + [need - 31 * 2048]
        got = b"".join(
            n.ram.read(gpa, length) for (_, gpa), (_, length) in zip(bufs, used, strict=False)
        )
        assert HDR.unpack(got[:HDR_LEN]) == (1, 1, 54, 1460, 34, 16, 32)
        assert got[HDR_LEN:] == frame
        assert n.ram.canaries_intact()
    finally:
        n.close()


@pytest.mark.parametrize(
    ("acked", "header", "dropped"),
    [
        (0, HDR.pack(1, 1, 54, 1460, 34, 16, 0), "rx_flags"),  # no GUEST_CSUM
        (vf.bit(vf.NET_GUEST_CSUM), HDR.pack(1, 1, 54, 1460, 34, 16, 0), "rx_gso_type"),
        (OFFLOADS, HDR.pack(1, 3, 42, 1472, 34, 6, 0), "rx_gso_type"),  # UFO never offered
        (OFFLOADS, HDR.pack(1, 0, 0, 0, 34, 65_000, 0), "rx_csum"),
        (OFFLOADS, HDR.pack(0, 0, 0, 0, 0, 0, 0), "rx_oversize"),  # 64 KiB without GSO
    ],
)
def test_rx_headers_the_guest_cannot_take_are_dropped(
    acked: int, header: bytes, dropped: str
) -> None:
    n = Nic(offloads=acked, queue_size=64)
    try:
        n.post_rx(*[2048] * 40)
        n.from_tap(tso_frame()[0], header)
        n.from_tap(frame_of(60))
        n.dev.process_queue(0, n.rxq)
        assert [length for _, length in n.rx.take_used()] == [HDR_LEN + 60]
        assert n.dev.stats().dropped[dropped] == 1
    finally:
        n.close()


def test_data_valid_reaches_the_guest_only_with_guest_csum() -> None:
    for acked, flags in ((OFFLOADS, 2), (0, 0)):
        n = Nic(offloads=acked)
        try:
            n.post_rx(2048)
            n.from_tap(frame_of(60), HDR.pack(2, 0, 0, 0, 0, 0, 0))
            n.dev.process_queue(0, n.rxq)
            [(_, length)] = n.rx.take_used()
            assert length == HDR_LEN + 60
            assert HDR.unpack(n.ram.read(n.rx.data_gpa, HDR_LEN))[0] == flags
        finally:
            n.close()


def test_card_services_check_a_tso_frame_like_any_other() -> None:
    services = NicServices(nic_config(mac="52:54:00:12:34:56"))
    n = Nic(offloads=OFFLOADS, hook=services, queue_size=16)
    try:
        good, header = tso_frame()
        spoofed_ip, _ = tso_frame(src_ip=bytes([10, 8, 0, 99]))
        spoofed_mac, _ = tso_frame(src_mac=bytes.fromhex("525400999999"))
        for frame in (good, spoofed_ip, spoofed_mac):
            n.send(frame, header=header)
        n.dev.process_queue(1, n.txq)
        assert n.wire_raw() == [header + good]  # the header travels with the checked copy
        assert services.dropped_spoofed == 2 and services.forwarded == 1
    finally:
        n.close()


def test_a_partial_checksum_frame_to_the_metadata_service_is_answered() -> None:
    services = NicServices(nic_config(mac="52:54:00:12:34:56"))
    n = Nic(offloads=OFFLOADS, hook=services, queue_size=16)
    try:
        n.post_rx(2048, 2048)
        syn = tcp_frame(40001, 100, 0, 0x02)
        syn = CARD_MAC + syn[6:]
        # NEEDS_CSUM: the checksum field holds garbage the device would complete
        syn = syn[: 14 + 20 + 16] + b"\xab\xcd" + syn[14 + 20 + 18 :]
        n.send(syn, header=HDR.pack(1, 0, 0, 0, 34, 16, 0))
        n.dev.process_queue(1, n.txq)
        n.dev.process_queue(0, n.rxq)
        [(_, length)] = n.rx.take_used()
        reply = n.ram.read(n.rx.data_gpa, length)[HDR_LEN:]
        assert reply[23] == 6 and reply[14 + 20 + 13] == 0x12  # TCP SYN-ACK from the card
        assert services.consumed == 1 and n.wire_raw() == []
    finally:
        n.close()


def test_card_services_check_an_ipv6_tso_frame_like_any_other() -> None:
    services = NicServices(
        nic_config(mac="52:54:00:12:34:56", ipv6=(IPv6Interface(f"{NIC_IP6}/64"),))
    )
    n = Nic(offloads=OFFLOADS, hook=services, queue_size=16)
    try:
        tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x18, 65535, 0x1234, 0)
        payload = tcp + frame_of(TSO_PAYLOAD, seed=3)
        header = HDR.pack(1, 4, 74, 1440, 54, 16, 0)  # NEEDS_CSUM, GSO_TCPV6
        good = bytes(6) + MAC + b"\x86\xdd" + ipv6(payload, 6, src=NIC_IP6, dst=PEER_IP6)
        spoofed = bytes(6) + MAC + b"\x86\xdd" + ipv6(payload, 6, src=PEER_IP6, dst=NIC_IP6)
        n.send(good, header=header)
        n.send(spoofed, header=header)
        n.dev.process_queue(1, n.txq)
        assert n.wire_raw() == [header + good]
        assert services.dropped_spoofed == 1 and services.forwarded == 1
    finally:
        n.close()
