"""TcpResponder on its own: segments in, segments out, a hand-moved clock."""

from __future__ import annotations

from offload.network.packets import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TcpSegment
from offload.network.tcp import ConnState, TcpReply, TcpResponder

PEER = b"\x0a\x00\x00\x05"
M = 0xFFFFFFFF
RESPONSE = b"R" * 1000


def app(request: bytes) -> bytes | None:
    return RESPONSE if request.endswith(b"\r\n\r\n") else None


def seg(
    seq: int,
    ack: int,
    flags: int,
    data: bytes = b"",
    *,
    window: int = 65535,
    mss: int | None = None,
    port: int = 5000,
) -> TcpSegment:
    return TcpSegment(port, 80, seq & M, ack & M, flags, window, mss, data)


def open_conn(t: TcpResponder, isn: int = M - 2) -> int:
    """Handshake with a peer ISN close to the wrap; returns our ISN."""
    (synack,) = t.handle(PEER, seg(isn, 0, TCP_SYN, mss=100), 0.0)
    assert synack.flags == TCP_SYN | TCP_ACK and synack.mss == 1460
    assert t.handle(PEER, seg(isn + 1, synack.seq + 1, TCP_ACK), 0.0) == []
    return synack.seq


def test_wraparound_zero_window_and_window_update() -> None:
    t = TcpResponder(app, isn=lambda: M - 10)
    iss = open_conn(t)
    req = b"GET / HTTP/1.1\r\n\r\n"
    replies = t.handle(PEER, seg(M - 1, iss + 1, TCP_ACK | TCP_PSH, req, window=0), 0.0)
    assert [r.flags for r in replies] == [TCP_ACK]  # zero window: only the ACK
    assert replies[0].ack == (M - 1 + len(req)) & M
    replies = t.handle(PEER, seg(M - 1 + len(req), iss + 1, TCP_ACK, window=250), 0.0)
    assert [len(r.payload) for r in replies] == [100, 100, 50]  # peer MSS 100, window 250
    assert replies[0].seq == (iss + 1) & M
    replies = t.handle(PEER, seg(M - 1 + len(req), iss + 1 + 250, TCP_ACK, window=5000), 0.0)
    assert sum(len(r.payload) for r in replies) == 750 and replies[-1].flags & TCP_FIN


def test_poll_retransmits_and_expires() -> None:
    t = TcpResponder(app, rto=1.0, idle_timeout=10)
    iss = open_conn(t, isn=100)
    first = t.handle(PEER, seg(101, iss + 1, TCP_ACK, b"GET / HTTP/1.1\r\n\r\n"), 0.0)
    assert t.poll(0.5) == []
    again = [r for _, _, r in t.poll(1.5)]
    assert [r.payload for r in again] == [r.payload for r in first]
    assert t.poll(20.0) == [] and len(t) == 0 and t.expired == 1


def test_unacked_syn_ack_is_resent_by_poll() -> None:
    t = TcpResponder(app)
    (synack,) = t.handle(PEER, seg(7, 0, TCP_SYN), 0.0)
    ((_, port, again),) = t.poll(2.0)
    assert port == 5000 and again == synack


def test_close_time_wait_and_reuse() -> None:
    t = TcpResponder(app, time_wait=2.0)
    iss = open_conn(t, isn=100)
    req = b"GET / HTTP/1.1\r\n\r\n"
    out = t.handle(PEER, seg(101, iss + 1, TCP_ACK, req), 0.0)
    fin_end = (out[-1].seq + len(out[-1].payload) + 1) & M
    (ack,) = t.handle(PEER, seg(101 + len(req), fin_end, TCP_ACK | TCP_FIN), 0.0)
    assert ack.flags == TCP_ACK and ack.ack == 101 + len(req) + 1
    assert t.state_of(PEER, 5000) is ConnState.TIME_WAIT
    (again,) = t.handle(PEER, seg(101 + len(req), fin_end, TCP_ACK | TCP_FIN), 0.5)
    assert again == ack  # a retransmitted FIN is acknowledged again
    (synack,) = t.handle(PEER, seg(9999, 0, TCP_SYN), 1.0)  # new ISN: a new connection
    assert synack.flags == TCP_SYN | TCP_ACK and synack.ack == 10000


def test_challenge_ack_gap_and_in_window_rst() -> None:
    t = TcpResponder(app)
    iss = open_conn(t, isn=100)
    (challenge,) = t.handle(PEER, seg(5555, 0, TCP_SYN), 0.0)
    assert challenge.flags == TCP_ACK and challenge.ack == 101
    (dup,) = t.handle(PEER, seg(110, iss + 1, TCP_ACK, b"late"), 0.0)  # a gap
    assert dup.ack == 101
    assert t.handle(PEER, seg(99999, 0, TCP_RST), 0.0) == [] and len(t) == 1  # outside
    assert t.handle(PEER, seg(101, 0, TCP_RST), 0.0) == [] and len(t) == 0


def test_bad_ack_of_syn_and_segments_without_ack() -> None:
    t = TcpResponder(app)
    (synack,) = t.handle(PEER, seg(100, 0, TCP_SYN), 0.0)
    (rst,) = t.handle(PEER, seg(101, synack.seq + 5, TCP_ACK), 0.0)
    assert rst == TcpReply(seq=(synack.seq + 5) & M, ack=0, flags=TCP_RST, window=0)
    assert t.handle(PEER, seg(101, 0, TCP_PSH, b"x"), 0.0) == []
    (rst,) = t.handle(PEER, seg(1, 0, TCP_SYN | TCP_ACK, port=6000), 0.0)
    assert rst.flags == TCP_RST


def test_peer_fin_before_a_complete_request_closes_gracefully() -> None:
    t = TcpResponder(app)
    iss = open_conn(t, isn=100)
    (fin,) = t.handle(PEER, seg(101, iss + 1, TCP_ACK | TCP_FIN, b"GET /"), 0.0)
    assert fin.flags == TCP_ACK | TCP_FIN and fin.ack == 101 + 5 + 1 and fin.payload == b""
