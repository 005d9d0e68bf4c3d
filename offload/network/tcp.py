"""A minimal TCP responder: one request, one response, close (sans-I/O).

``TcpResponder.handle(peer_ip, segment, now)`` takes one parsed segment the
guest sent to the service and returns the segments to send back
(``TcpReply``: seq, ack, flags, window, payload, MSS option); the caller
wraps them in IPv4 and ethernet.  There are no sockets and no timers:
``now`` comes from the caller, idle state expires lazily on every call, and
``poll(now)`` retransmits what the guest has not acknowledged for ``rto``
seconds (call it from a timer when RX frames can be lost).

One connection, keyed by (peer address, peer port), goes::

    SYN_RCVD --ACK of our SYN--> ESTABLISHED --request head complete-->
    SENDING (response + FIN, as far as the peer's window allows)
    --FIN acked and peer FIN seen--> TIME_WAIT --time_wait s--> gone

* Sequence numbers are kept as offsets from our ISN+1 and the peer's ISN+1;
  every comparison is done on offsets after a signed 32-bit difference, so
  wrap-around never matters.  Our ISN is random.
* The request is accumulated in order; a segment past ``rcv_nxt`` (a gap)
  gets a duplicate ACK and is dropped, overlap with bytes already taken is
  trimmed, and the advertised window is the room left under
  ``max_request``.  The app (``Callable[[bytes], bytes | None]``) sees the
  whole buffer after each new byte and returns the response once the
  request is complete; if the buffer is full and the app still wants more,
  the connection is reset.
* The response goes out in MSS-sized segments (the smaller of the peer's MSS
  option, 536 without one, and our own), within the peer's window; the FIN
  rides on the last segment.  A later ACK that opens the window sends more.
* Retransmissions by the guest are answered: a repeated SYN gets the SYN-ACK
  again, repeated data or a repeated FIN is acknowledged again, and a
  duplicate pure ACK (no progress while data is outstanding) resends from
  the oldest unacknowledged byte (go-back-N; responses are small).
* Anything unexpected gets a RST as RFC 793 prescribes (a segment for no
  connection, an ACK of a SYN we never sent, a port other than ours), except
  a RST, which is never answered.  An in-window RST closes the connection.
  A SYN with a new ISN on a live connection gets a challenge ACK
  (RFC 5961); on a TIME_WAIT connection it starts a new one.
* State is bounded: at most ``max_connections`` (a new SYN first evicts the
  oldest TIME_WAIT, then the oldest half-open connection, else it is reset),
  ``max_request`` bytes of request per connection, and ``idle_timeout``
  seconds without a segment from the peer.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from offload.network.packets import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TcpSegment

__all__ = ["ConnState", "TcpReply", "TcpResponder"]

_MASK = 0xFFFFFFFF
DEFAULT_MSS = 536


def _diff(a: int, b: int) -> int:
    """a - b in sequence space, as a signed 32-bit number."""
    d = (a - b) & _MASK
    return d - (1 << 32) if d & 0x80000000 else d


class ConnState(enum.Enum):
    SYN_RCVD = "syn-rcvd"
    ESTABLISHED = "established"
    SENDING = "sending"
    TIME_WAIT = "time-wait"


@dataclass(frozen=True, slots=True)
class TcpReply:
    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes = b""
    mss: int | None = None


class _Conn:
    __slots__ = (
        "fin_seen",
        "irs",
        "iss",
        "last",
        "mss",
        "out",
        "peer_wnd",
        "rcv_nxt",
        "request",
        "sent_at",
        "snd_nxt",
        "snd_una",
        "state",
    )

    def __init__(self, *, iss: int, irs: int, mss: int, peer_wnd: int, now: float) -> None:
        self.iss = iss  # our ISN; our offsets count from iss + 1
        self.irs = irs  # the peer's ISN; its offsets count from irs + 1
        self.mss = mss
        self.peer_wnd = peer_wnd
        self.state = ConnState.SYN_RCVD
        self.snd_una = -1  # our SYN is not acknowledged yet
        self.snd_nxt = 0
        self.rcv_nxt = 0  # request bytes taken (+1 once the peer's FIN is seen)
        self.fin_seen = False
        self.request = bytearray()
        self.out: bytes | None = None  # the response; a FIN follows it
        self.last = now
        self.sent_at = now


class TcpResponder:
    """Serves one TCP port of the card for one NIC; not thread-safe (the caller locks)."""

    def __init__(
        self,
        app: Callable[[bytes], bytes | None],
        *,
        port: int = 80,
        mss: int = 1460,
        max_connections: int = 64,
        max_request: int = 8192,
        idle_timeout: float = 30.0,
        time_wait: float = 2.0,
        rto: float = 1.0,
        isn: Callable[[], int] = lambda: secrets.randbits(32),
    ) -> None:
        if mss < 64 or max_connections < 1 or max_request < 64:
            raise ValueError("mss >= 64, max_connections >= 1 and max_request >= 64")
        self.app = app
        self.port = port
        self.mss = mss
        self.max_connections = max_connections
        self.max_request = max_request
        self.idle_timeout = idle_timeout
        self.time_wait = time_wait
        self.rto = rto
        self._isn = isn
        self._conns: dict[tuple[bytes, int], _Conn] = {}
        self.connections_total = 0
        self.resets_sent = 0
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._conns)

    def state_of(self, peer: bytes, port: int) -> ConnState | None:
        conn = self._conns.get((peer, port))
        return None if conn is None else conn.state

    # -- entry points -------------------------------------------------------

    def handle(self, peer: bytes, seg: TcpSegment, now: float) -> list[TcpReply]:
        """The segments that answer *seg* from *peer* (an IPv4 address, 4 bytes)."""
        self._expire(now)
        if seg.flags & TCP_RST:
            self._on_rst(peer, seg)
            return []
        if seg.dport != self.port:
            return self._reset_for(seg)
        key = (peer, seg.sport)
        conn = self._conns.get(key)
        if seg.flags & TCP_SYN:
            return self._on_syn(key, conn, seg, now)
        if conn is None:
            return self._reset_for(seg)
        if not seg.flags & TCP_ACK:
            return []  # RFC 793: a segment without ACK in a synchronized state is dropped
        conn.last = now
        return self._on_segment(key, conn, seg, now)

    def poll(self, now: float) -> list[tuple[bytes, int, TcpReply]]:
        """Expire idle state; resend what has been unacknowledged for ``rto`` seconds.

        Returns (peer address, peer port, segment) triples.
        """
        self._expire(now)
        out: list[tuple[bytes, int, TcpReply]] = []
        for (peer, port), conn in self._conns.items():
            if conn.state is ConnState.TIME_WAIT or now - conn.sent_at < self.rto:
                continue
            if conn.snd_una < 0:
                out.append((peer, port, self._syn_ack(conn)))
                conn.sent_at = now
            elif conn.snd_una < conn.snd_nxt:
                conn.snd_nxt = conn.snd_una
                out.extend((peer, port, r) for r in self._send(conn, now))
        return out

    # -- pieces -------------------------------------------------------------

    def _expire(self, now: float) -> None:
        for key, conn in list(self._conns.items()):
            limit = self.time_wait if conn.state is ConnState.TIME_WAIT else self.idle_timeout
            if now - conn.last > limit:
                del self._conns[key]
                self.expired += 1

    def _on_rst(self, peer: bytes, seg: TcpSegment) -> None:
        conn = self._conns.get((peer, seg.sport))
        if conn is None:
            return
        offset = _diff(seg.seq, conn.irs + 1)
        if conn.rcv_nxt <= offset <= conn.rcv_nxt + max(self._window(conn), 1):
            del self._conns[(peer, seg.sport)]

    def _reset_for(self, seg: TcpSegment) -> list[TcpReply]:
        self.resets_sent += 1
        if seg.flags & TCP_ACK:
            return [TcpReply(seq=seg.ack, ack=0, flags=TCP_RST, window=0)]
        length = len(seg.payload) + (1 if seg.flags & TCP_SYN else 0) + (seg.flags & TCP_FIN)
        return [TcpReply(seq=0, ack=(seg.seq + length) & _MASK, flags=TCP_RST | TCP_ACK, window=0)]

    def _window(self, conn: _Conn) -> int:
        if conn.out is not None:
            return self.max_request
        return max(0, self.max_request - len(conn.request))

    def _syn_ack(self, conn: _Conn) -> TcpReply:
        return TcpReply(
            seq=conn.iss,
            ack=(conn.irs + 1) & _MASK,
            flags=TCP_SYN | TCP_ACK,
            window=self._window(conn),
            mss=self.mss,
        )

    def _ack(self, conn: _Conn) -> TcpReply:
        return TcpReply(
            seq=(conn.iss + 1 + conn.snd_nxt) & _MASK,
            ack=(conn.irs + 1 + conn.rcv_nxt) & _MASK,
            flags=TCP_ACK,
            window=self._window(conn),
        )

    def _make_room(self) -> bool:
        if len(self._conns) < self.max_connections:
            return True
        for state in (ConnState.TIME_WAIT, ConnState.SYN_RCVD):
            victims = [(c.last, k) for k, c in self._conns.items() if c.state is state]
            if victims:
                del self._conns[min(victims)[1]]
                self.evicted += 1
                return True
        return False

    def _on_syn(
        self, key: tuple[bytes, int], conn: _Conn | None, seg: TcpSegment, now: float
    ) -> list[TcpReply]:
        if seg.flags & TCP_ACK:
            return self._reset_for(seg)  # a SYN-ACK: we never connect out
        if conn is not None:
            conn.last = now
            if seg.seq == conn.irs:  # retransmitted SYN
                return [self._syn_ack(conn)] if conn.snd_una < 0 else [self._ack(conn)]
            if conn.state is not ConnState.TIME_WAIT:
                return [self._ack(conn)]  # challenge ACK (RFC 5961 section 4)
            del self._conns[key]
        if not self._make_room():
            return self._reset_for(seg)
        peer_mss = seg.mss if seg.mss else DEFAULT_MSS
        conn = _Conn(
            iss=self._isn() & _MASK,
            irs=seg.seq,
            mss=max(64, min(self.mss, peer_mss)),
            peer_wnd=seg.window,
            now=now,
        )
        self._conns[key] = conn
        self.connections_total += 1
        return [self._syn_ack(conn)]

    def _on_segment(
        self, key: tuple[bytes, int], conn: _Conn, seg: TcpSegment, now: float
    ) -> list[TcpReply]:
        acked = _diff(seg.ack, conn.iss + 1)
        if conn.state is ConnState.SYN_RCVD:
            if acked != 0:
                return self._reset_for(seg)
            conn.state = ConnState.ESTABLISHED
            conn.snd_una = 0
        if acked > conn.snd_nxt:
            return [self._ack(conn)]  # acknowledges what we never sent
        replies: list[TcpReply] = []
        no_progress = acked == conn.snd_una and conn.snd_una < conn.snd_nxt
        pure_ack = not seg.payload and not seg.flags & TCP_FIN
        same_window = seg.window == conn.peer_wnd
        if acked > conn.snd_una:
            conn.snd_una = acked
        conn.peer_wnd = seg.window
        need_ack, old = self._take(conn, seg)
        # a duplicate ACK or a retransmission by the guest: what we sent was lost
        go_back = no_progress and ((pure_ack and same_window) or old)
        if conn.out is None:
            response = self.app(bytes(conn.request))
            if response is None and conn.fin_seen:
                response = b""  # the peer closed before its request was complete
            if response is None and len(conn.request) >= self.max_request:
                del self._conns[key]
                self.resets_sent += 1
                seq = (conn.iss + 1 + conn.snd_nxt) & _MASK
                return [TcpReply(seq=seq, ack=0, flags=TCP_RST, window=0)]
            if response is not None:
                conn.out = response
                conn.state = ConnState.SENDING
        if conn.out is not None:
            fin_off = len(conn.out)
            if conn.fin_seen and conn.snd_una > fin_off:
                conn.state = ConnState.TIME_WAIT
            if go_back:
                conn.snd_nxt = conn.snd_una
            replies.extend(self._send(conn, now))
        if need_ack and not replies:
            replies.append(self._ack(conn))
        return replies

    def _take(self, conn: _Conn, seg: TcpSegment) -> tuple[bool, bool]:
        """Take in-order bytes and the FIN from *seg*.

        Returns whether an ACK is owed and whether *seg* held nothing new.
        """
        if not seg.payload and not seg.flags & TCP_FIN:
            return False, False
        start = _diff(seg.seq, conn.irs + 1)
        end = start + len(seg.payload) + (seg.flags & TCP_FIN)
        if conn.fin_seen or end <= conn.rcv_nxt:
            return True, True  # a retransmission: ACK it again
        if start > conn.rcv_nxt:
            return True, False  # a gap: duplicate ACK, drop
        skip = conn.rcv_nxt - start
        data = seg.payload[skip:] if skip < len(seg.payload) else b""
        if conn.out is None:
            data = data[: self._window(conn)]
            conn.request += data
        conn.rcv_nxt += len(data)
        if seg.flags & TCP_FIN and start + len(seg.payload) == conn.rcv_nxt:
            conn.fin_seen = True
            conn.rcv_nxt += 1
        return True, False

    def _send(self, conn: _Conn, now: float) -> list[TcpReply]:
        """Data from snd_nxt within the peer's window, then the FIN."""
        assert conn.out is not None
        out: list[TcpReply] = []
        end = min(len(conn.out), conn.snd_una + conn.peer_wnd)
        ack = (conn.irs + 1 + conn.rcv_nxt) & _MASK
        window = self._window(conn)
        while conn.snd_nxt < end:
            chunk = conn.out[conn.snd_nxt : min(end, conn.snd_nxt + conn.mss)]
            flags = TCP_ACK | TCP_PSH
            seq = (conn.iss + 1 + conn.snd_nxt) & _MASK
            conn.snd_nxt += len(chunk)
            if conn.snd_nxt == len(conn.out):
                flags |= TCP_FIN
                conn.snd_nxt += 1
            out.append(TcpReply(seq=seq, ack=ack, flags=flags, window=window, payload=chunk))
        if conn.snd_nxt == len(conn.out):  # nothing (left) to send but the FIN
            seq = (conn.iss + 1 + conn.snd_nxt) & _MASK
            conn.snd_nxt += 1
            out.append(TcpReply(seq=seq, ack=ack, flags=TCP_ACK | TCP_FIN, window=window))
        if out:
            conn.sent_at = now
        return out
