"""Property tests: a hostile driver throws broken rings at the queue and virtio-blk.

Two generators.  ``chaos`` fills the descriptor table, the avail ring and
the buffers with arbitrary values biased towards the interesting ones
(addresses at region edges, straddling the two regions, past 2**64; lengths
near 2**32; every flag combination; next indices around the table size).
``mutated`` builds well-formed requests and breaks some of them in one known
way each, so the outcome of every request can be predicted exactly.

Always asserted: ``process_queue`` never raises; the canary bytes that
surround and separate the two guest regions in the memfd are unchanged; and
either the device reports NEEDS_RESET or every consumed head came back in
the used ring, in order, with a valid id.  For mutated requests we also
check that the device wrote guest memory only inside the used ring and the
buffers the driver marked writable, and never touched volume sectors no
request addressed.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from offload.devices.blk import S_IOERR, S_OK, S_UNSUPP, T_FLUSH, T_GET_ID, T_IN, T_OUT
from offload.storage.volume import SparseFileVolume
from offload.virtio.chain import F_INDIRECT, F_NEXT, F_WRITE
from tests.unit.offload.blkreq import STATUS_UNSET, add_request, make_device, make_volume
from tests.unit.offload.ringbuilder import DriverRing, GuestRam

DESC = struct.Struct("<QIHH")
VOL_SIZE = 1 << 20
READ_ZONE = 1024  # sectors >= this hold a fixed pattern and are never written
PATTERN = bytes(range(256)) * (VOL_SIZE // 2 // 256)
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def volume() -> Iterator[SparseFileVolume]:
    vol, path = make_volume(VOL_SIZE)
    os.pwrite(vol.fd, PATTERN, READ_ZONE * 512)
    yield vol
    vol.close()
    os.unlink(path)


def snapshot(ram: GuestRam) -> list[bytes]:
    return [ram.read(r.guest_phys_addr, r.size) for r in ram.regions]


def changed_addresses(ram: GuestRam, before: list[bytes]) -> Iterator[int]:
    """Guest addresses whose byte differs from ``before`` (4 KiB chunks first)."""
    for region, old in zip(ram.regions, before, strict=True):
        new = ram.read(region.guest_phys_addr, region.size)
        for c in range(0, region.size, 4096):
            if old[c : c + 4096] != new[c : c + 4096]:
                for i in range(c, min(c + 4096, region.size)):
                    if old[i] != new[i]:
                        yield region.guest_phys_addr + i


def used_matches_consumed(ring: DriverRing, avail_heads: list[int], consumed: int) -> None:
    used = ring.take_used()
    assert len(used) == consumed
    assert [h for h, _ in used] == avail_heads[:consumed]
    assert all(0 <= h < ring.size for h, _ in used)


class PopRecorder:
    """Inflight hooks that record which heads the device took off the avail ring."""

    def __init__(self) -> None:
        self.popped: list[int] = []

    def on_pop(self, head: int) -> None:
        self.popped.append(head)

    def on_push(self, head: int) -> None:
        pass


# -- chaos --------------------------------------------------------------------


def interesting_addresses(ram: GuestRam, ring: DriverRing) -> list[int]:
    b = ram.regions[1].guest_phys_addr
    blobs = [ring.data_gpa + 256 * i + off for i in range(8) for off in (0, 16, 17)]
    return [
        *blobs,
        ring.desc_gpa,  # the descriptor table itself (indirect into the main table)
        ring.avail_gpa,
        ring.used_gpa,
        b - 8,  # straddles region A and region B
        b,
        ram.end_gpa - 1,
        ram.end_gpa,  # just past region B
        ram.base_gpa - 16,  # just below region A
        0,
        (1 << 64) - 16,  # wraps in 64-bit arithmetic
    ]


LENGTHS = [0, 1, 7, 8, 15, 16, 17, 32, 48, 513, 4096, 1 << 31, (1 << 32) - 1]


@st.composite
def descriptor(draw: st.DrawFn, addrs: list[int], size: int) -> bytes:
    addr = draw(st.one_of(st.sampled_from(addrs), st.integers(0, (1 << 64) - 1)))
    length = draw(st.one_of(st.sampled_from(LENGTHS), st.integers(0, (1 << 32) - 1)))
    plausible_flags = st.sampled_from([0, F_NEXT, F_WRITE, F_NEXT | F_WRITE, F_INDIRECT])
    flags = draw(st.one_of(plausible_flags, st.integers(0, 7), st.integers(0, 0xFFFF)))
    nxt = draw(st.one_of(st.integers(0, size - 1), st.integers(0, 0xFFFF)))
    return DESC.pack(addr, length, flags, nxt)


@SETTINGS
@given(data=st.data(), event_idx=st.booleans())
def test_chaos_rings_never_escape(
    volume: SparseFileVolume, data: st.DataObject, event_idx: bool
) -> None:
    ram = GuestRam(region_size=64 * 1024)
    try:
        size = 16
        ring = DriverRing(ram, size=size, event_idx=event_idx)
        addrs = interesting_addresses(ram, ring)
        table = b"".join(data.draw(st.lists(descriptor(addrs, size), min_size=size, max_size=size)))
        ram.write(ring.desc_gpa, table)
        for i in range(8):  # buffers: headers, indirect tables or noise
            blob = data.draw(
                st.one_of(
                    st.binary(max_size=256),
                    st.builds(
                        lambda t, s: struct.pack("<IIQ", t, 0, s),
                        st.sampled_from([T_IN, T_OUT, T_FLUSH, T_GET_ID, 11, 13, 99]),
                        st.integers(0, (1 << 64) - 1),
                    ),
                    st.lists(descriptor(addrs, size), max_size=16).map(b"".join),
                )
            )
            ram.write(ring.data_gpa + 256 * i, blob)
        wild_ring = data.draw(st.integers(0, 3)) == 0  # a quarter: bad heads and indices
        head = st.integers(0, size + 3 if wild_ring else size - 1)
        heads = data.draw(st.lists(head, min_size=size, max_size=size))
        ram.write(ring.avail_gpa + 4, struct.pack(f"<{size}H", *heads))
        avail_idx = data.draw(st.integers(0, 0xFFFF if wild_ring else size))
        ring.set_avail_idx(avail_idx)
        ring.set_avail_flags(data.draw(st.integers(0, 0xFFFF)))
        ring.set_used_event(data.draw(st.integers(0, 0xFFFF)))

        dev = make_device(volume)
        recorder = PopRecorder()
        q = ring.queue(inflight=recorder)
        avail_before = ram.read(ring.avail_gpa + 4, 2 * size)
        dev.process_queue(0, q)
        dev.process_queue(0, q)  # a second kick finds nothing new or stays stopped

        assert ram.canaries_intact()
        event(f"needs_reset={dev.needs_reset}")
        for kind in dev.stats().errors:
            event(f"error:{kind}")
        for kind in dev.stats().requests:
            event(f"request:{kind}")
        if dev.needs_reset:
            assert dev.needs_reset_reason
            assert ring.used_idx() <= q.last_avail_idx
        else:
            assert avail_idx <= size
            assert q.last_avail_idx == avail_idx
            # A device-writable buffer may point into the avail ring itself, and
            # then the device legitimately pops what it wrote there; the heads it
            # popped are the oracle, and they equal the driver's when the avail
            # ring was left alone.
            if ram.read(ring.avail_gpa + 4, 2 * size) == avail_before:
                assert recorder.popped == heads[:avail_idx]
            used_matches_consumed(ring, recorder.popped, avail_idx)
    finally:
        ram.close()


# -- mutated well-formed requests ----------------------------------------------

MUTATIONS = [
    "none",
    "type",
    "sector",
    "short_header",
    "no_status",
    "loop",
    "oob_addr",
    "straddle",
    "huge_len",
    "order",
    "bad_next",
    "nested_indirect",
    "indirect_len",
]
ZERO_LEN = {"no_status", "loop", "oob_addr", "straddle", "huge_len", "order", "bad_next"}
ZERO_LEN |= {"nested_indirect", "indirect_len"}


@dataclass
class Plan:
    kind: int
    mutation: str
    indirect: bool
    nsectors: int


plans = st.builds(
    Plan,
    kind=st.sampled_from([T_IN, T_OUT, T_FLUSH, T_GET_ID]),
    mutation=st.sampled_from(MUTATIONS),
    indirect=st.booleans(),
    nsectors=st.integers(1, 8),
)


def _chain_descs(ring: DriverRing, head: int, indirect: bool) -> tuple[int, int, list[int]]:
    """(table gpa, table size, indices in order) of the chain at ``head``."""
    raw = ring.ram.read(ring.desc_gpa + 16 * head, 16)
    addr, length, _, _ = DESC.unpack(raw)
    if indirect:
        table, n = addr, length // 16
        idx = 0
    else:
        table, n, idx = ring.desc_gpa, ring.size, head
    order = [idx]
    while True:
        _, _, f, nxt = DESC.unpack(ring.ram.read(table + 16 * idx, 16))
        if not f & F_NEXT:
            return table, n, order
        idx = nxt
        order.append(idx)


def _patch(ring: DriverRing, table: int, idx: int, **changes: int) -> None:
    gpa = table + 16 * idx
    addr, length, flags, nxt = DESC.unpack(ring.ram.read(gpa, 16))
    fields = {"addr": addr, "length": length, "flags": flags, "nxt": nxt} | changes
    ring.ram.write(gpa, DESC.pack(fields["addr"], fields["length"], fields["flags"], fields["nxt"]))


def build(ring: DriverRing, i: int, plan: Plan) -> tuple[int, int | None, int | None, int]:
    """Lay out request ``i``; returns (head, status gpa, data gpa, data len)."""
    m, kind = plan.mutation, plan.kind
    nbytes = plan.nsectors * 512
    sector = 8 * i if kind == T_OUT else READ_ZONE + 8 * i
    if m == "sector":
        sector = VOL_SIZE // 512 - plan.nsectors // 2 if i % 2 else (1 << 64) - 1
    kwargs: dict[str, object] = {}
    if kind == T_IN:
        kwargs["data_in_len"] = nbytes
    elif kind == T_OUT:
        kwargs["data_out"] = bytes([i + 1]) * nbytes
    elif kind == T_GET_ID:
        kwargs["data_in_len"] = 20
    rtype = 0x7777 if m == "type" else kind
    req = add_request(
        ring,
        rtype,
        sector,
        status=m != "no_status",
        indirect=plan.indirect,
        publish=False,
        **kwargs,  # type: ignore[arg-type]
    )
    table, n, order = _chain_descs(ring, req.head, plan.indirect)
    last, data = order[-1], order[1] if len(order) > 2 else order[0]
    b = ring.ram.regions[1].guest_phys_addr
    if m == "short_header":
        _patch(ring, table, order[0], length=8)
    elif m == "loop":
        _patch(ring, table, last, flags=F_WRITE | F_NEXT, nxt=order[0])
    elif m == "oob_addr":
        _patch(ring, table, data, addr=ring.ram.end_gpa + 4096)
    elif m == "straddle":
        _patch(ring, table, data, addr=b - 8, length=64)
    elif m == "huge_len":
        _patch(ring, table, data, length=(1 << 32) - 1)
    elif m == "order" and req.status_gpa is not None:
        _patch(ring, table, last, flags=0)  # readable status after writable data
        if len(order) <= 2 or kind in (T_OUT, T_FLUSH):
            _patch(ring, table, order[0], flags=F_WRITE | F_NEXT)  # header writable first
    elif m == "bad_next":
        _patch(ring, table, last, flags=F_WRITE | F_NEXT, nxt=n + 3)
    elif m == "nested_indirect" and plan.indirect:
        _patch(ring, table, order[0], flags=F_INDIRECT | F_NEXT)
    elif m == "indirect_len" and plan.indirect:
        _patch(ring, ring.desc_gpa, req.head, length=24)
    return req.head, req.status_gpa, req.data_in_gpa, req.data_in_len


def expected(plan: Plan) -> tuple[int | None, bool]:
    """(status byte, data expected) for a plan; status None means used len 0."""
    m = plan.mutation
    if m in ("nested_indirect", "indirect_len") and not plan.indirect:
        m = "none"
    if m in ZERO_LEN:
        return None, False
    if m == "type":
        return S_UNSUPP, False
    if m == "short_header":
        return S_IOERR, False
    if m == "sector" and plan.kind in (T_IN, T_OUT):
        return S_IOERR, False
    return S_OK, True


@SETTINGS
@given(
    batch=st.lists(plans, min_size=1, max_size=10),
    fatal=st.sampled_from([None, "avail_jump", "bad_head"]),
    event_idx=st.booleans(),
)
def test_mutated_requests_complete_as_predicted(
    volume: SparseFileVolume, batch: list[Plan], fatal: str | None, event_idx: bool
) -> None:
    ram = GuestRam(region_size=128 * 1024)
    try:
        ring = DriverRing(ram, size=64, event_idx=event_idx)
        dev = make_device(volume)
        q = ring.device_queue()
        built = [build(ring, i, plan) for i, plan in enumerate(batch)]
        heads = [h for h, _, _, _ in built]
        ring.publish(*heads)
        before = snapshot(ram)
        dev.process_queue(0, q)
        assert not dev.needs_reset
        allowed = [(ring.used_gpa, 6 + 8 * ring.size)]
        for _, status_gpa, data_gpa, data_len in built:
            if status_gpa is not None:
                allowed.append((status_gpa, 1))
            if data_gpa is not None:
                allowed.append((data_gpa, data_len))
        for gpa in changed_addresses(ram, before):
            assert any(a <= gpa < a + n for a, n in allowed), hex(gpa)
        assert os.pread(volume.fd, len(PATTERN), READ_ZONE * 512) == PATTERN
        used = dict(ring.take_used())
        assert list(used) == heads or len(set(heads)) < len(heads)
        for i, (plan, (head, status_gpa, data_gpa, data_len)) in enumerate(
            zip(batch, built, strict=True)
        ):
            want_status, want_data = expected(plan)
            if plan.mutation == "no_status" and data_gpa is not None:
                # The device cannot tell: the last data byte becomes the status.
                last = ram.read(data_gpa + data_len - 1, 1)[0]
                if plan.kind == T_IN:  # 511 + 1 bytes: not whole sectors
                    assert (used[head], last) == (1, S_IOERR), plan
                else:  # GET_ID: 19 id bytes + status
                    assert (used[head], last) == (20, S_OK), plan
                continue
            if want_status is None:
                assert used[head] == 0, plan
                if status_gpa is not None and plan.mutation not in ("order",):
                    assert ram.read(status_gpa, 1)[0] == STATUS_UNSET, plan
                continue
            assert status_gpa is not None
            assert ram.read(status_gpa, 1)[0] == want_status, plan
            if want_status != S_OK:
                assert used[head] == 1, plan
                continue
            assert used[head] == 1 + (data_len if plan.kind in (T_IN, T_GET_ID) else 0)
            if plan.kind == T_IN and want_data:
                want = PATTERN[8 * i * 512 : 8 * i * 512 + data_len]
                assert data_gpa is not None and ram.read(data_gpa, data_len) == want
            if plan.kind == T_OUT:
                assert os.pread(volume.fd, 512, 8 * i * 512) == bytes([i + 1]) * 512
        assert ram.canaries_intact()

        if fatal is not None:
            used_before = ring.used_idx()
            if fatal == "avail_jump":
                ring.set_avail_idx(ring.avail_idx + ring.size + 1)
            else:
                ring.publish(ring.size + 7)
            assert not dev.process_queue(0, q)
            assert dev.needs_reset
            assert ring.used_idx() == used_before
            assert not dev.process_queue(0, q)
        assert ram.canaries_intact()
    finally:
        ram.close()
