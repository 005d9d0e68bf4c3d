"""A guest's TCP over the test front-end: enough to move a byte stream to and from a kernel socket.

Written from RFC 793/1071 for tests and benchmarks, sharing no code with the
card.  ``GuestTcp`` is one IPv4 connection from the guest's address to a peer
(options: MSS, and window scaling with a shift of 0, so the peer may open
a large window towards it while its own stays at 64 KiB):

* ``connect()``: SYN, wait for SYN-ACK, ACK;
* ``send(data, tso=...)``: cuts the stream into frames of ``mss`` bytes, or,
  with ``tso``, into TSO frames of up to ``tso_segments * mss`` bytes behind
  a virtio-net header (``GSO_TCPV4``, ``NEEDS_CSUM``, ``gso_size = mss``)
  whose TCP checksum holds only the pseudo-header sum, as a driver leaves it
  for the device.  Without CSUM negotiated every checksum is computed here.
  It sends what the peer's window allows, then reads ACKs; with no progress
  for ``rto`` seconds it goes back to the first unacknowledged byte;
* ``receive(n)``: takes in-order data (GSO frames the card merged from
  several RX buffers included), acknowledges after every batch, drops
  anything out of order (the peer retransmits);
* ``close()``: FIN, wait until it is acknowledged.

Frames go to ``peer_mac`` (the TAP's MAC when the peer is its namespace or a
router behind it); ARP is the test's business (a static neighbour entry).
"""

from __future__ import annotations

import array
import secrets
import struct
import sys
import time

from offload.testing.errors import FrontendTimeout
from offload.testing.net import NET_HDR, NetFeature, VhostUserNetFrontend

__all__ = ["GuestTcp", "checksum"]

ETH_HLEN = 14
IP_HLEN = 20
TCP_HLEN = 20
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
GSO_TCPV4 = 1
NEEDS_CSUM = 1
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_SWAP = sys.byteorder == "little"


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    words = array.array("H", data)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    if _SWAP:
        total = ((total & 0xFF) << 8) | (total >> 8)
    return total


def checksum(data: bytes) -> int:
    """The internet checksum (RFC 1071) of ``data``."""
    return ~_sum16(data) & 0xFFFF


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _window_shift(options: bytes) -> int:
    """The window scale option's shift in a SYN's options (0 without one), bounded walk."""
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2:
            break
        if kind == 3 and options[i + 1] == 3 and i + 2 < len(options):
            return min(options[i + 2], 14)
        i += options[i + 1]
    return 0


class GuestTcp:
    """One TCP connection played by the guest through a ``VhostUserNetFrontend``."""

    def __init__(
        self,
        fe: VhostUserNetFrontend,
        *,
        mac: bytes,
        ip: bytes,
        peer_mac: bytes,
        peer_ip: bytes,
        peer_port: int,
        port: int = 40000,
        mss: int = 1460,
        rto: float = 0.5,
        timeout: float = 30.0,
    ) -> None:
        self.fe = fe
        self.mac, self.ip, self.peer_mac, self.peer_ip = mac, ip, peer_mac, peer_ip
        self.port, self.peer_port = port, peer_port
        self.mss = mss
        self.rto = rto
        self.timeout = timeout
        self.snd_nxt = secrets.randbits(32)
        self.snd_una = self.snd_nxt
        self.rcv_nxt = 0
        self.peer_window = 0
        self.peer_shift = 0
        self.received = bytearray()
        self.peer_fin = False
        self.frames_sent = 0
        self.frames_received = 0
        self.largest_received = 0
        self._ip_id = 0
        self._csum = fe.has(NetFeature.CSUM)

    # -- frames ---------------------------------------------------------------

    def _frame(self, seq: int, flags: int, payload: bytes = b"", *, gso: bool = False) -> bytes:
        """Virtio-net header + ethernet/IPv4/TCP frame carrying ``payload`` at ``seq``."""
        # MSS, and window scaling with a shift of 0: the peer may scale its
        # window (many frames in flight towards it), ours stays at 64 KiB.
        options = struct.pack("!BBHBBBB", 2, 4, self.mss, 1, 3, 3, 0) if flags & SYN else b""
        tcp_len = TCP_HLEN + len(options) + len(payload)
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        ip = _IP.pack(
            0x45, 0, IP_HLEN + tcp_len, self._ip_id, 0x4000, 64, 6, 0, self.ip, self.peer_ip
        )
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        pseudo = _sum16(self.ip + self.peer_ip + struct.pack("!HH", 6, tcp_len))
        offset = (TCP_HLEN + len(options)) // 4 << 4
        ack = self.rcv_nxt if flags & ACK else 0
        tcp = _TCP.pack(self.port, self.peer_port, seq, ack, offset, flags, 65535, 0, 0) + options
        partial = self._csum  # then the device (or the kernel behind it) completes it
        check = pseudo if partial else ~_fold(pseudo + _sum16(tcp + payload)) & 0xFFFF
        tcp = tcp[:16] + struct.pack("!H", check) + tcp[18:]
        eth = self.peer_mac + self.mac + b"\x08\x00"
        csum_start = ETH_HLEN + IP_HLEN
        if gso:
            header = NET_HDR.pack(
                NEEDS_CSUM, GSO_TCPV4, csum_start + TCP_HLEN, self.mss, csum_start, 16, 0
            )
        elif partial:
            header = NET_HDR.pack(NEEDS_CSUM, 0, 0, 0, csum_start, 16, 0)
        else:
            header = bytes(NET_HDR.size)
        return header + eth + ip + tcp + payload

    def _send(self, seq: int, flags: int, payload: bytes = b"", *, gso: bool = False) -> None:
        data = self._frame(seq, flags, payload, gso=gso)
        self.fe.send(data[NET_HDR.size :], header=data[: NET_HDR.size])
        self.frames_sent += 1

    def _poll(self, timeout: float) -> bool:
        """Read what arrived (waiting up to ``timeout``); True if anything was for us."""
        try:
            frames = self.fe.receive(timeout=timeout)
        except FrontendTimeout:
            return False
        mine = False
        for frame in frames:
            mine |= self._segment(frame)
        return mine

    def _segment(self, frame: bytes) -> bool:
        if len(frame) < ETH_HLEN + IP_HLEN + TCP_HLEN or frame[12:14] != b"\x08\x00":
            return False
        ihl = (frame[ETH_HLEN] & 0x0F) * 4
        total = int.from_bytes(frame[ETH_HLEN + 2 : ETH_HLEN + 4], "big")
        if (
            frame[ETH_HLEN + 9] != 6
            or frame[ETH_HLEN + 12 : ETH_HLEN + 20] != self.peer_ip + self.ip
        ):
            return False
        tcp = frame[ETH_HLEN + ihl : ETH_HLEN + total]
        sport, dport, seq, ack, offset, flags, window, _, _ = _TCP.unpack(tcp[:TCP_HLEN])
        if (sport, dport) != (self.peer_port, self.port):
            return False
        self.frames_received += 1
        self.largest_received = max(self.largest_received, len(frame))
        if flags & RST:
            raise ConnectionResetError("the peer reset the connection")
        payload = tcp[(offset >> 4) * 4 :]
        if flags & SYN:
            self.rcv_nxt = (seq + 1) & 0xFFFFFFFF
            self.peer_shift = _window_shift(tcp[TCP_HLEN : (offset >> 4) * 4])
        elif seq == self.rcv_nxt:
            self.received += payload
            self.rcv_nxt = (self.rcv_nxt + len(payload)) & 0xFFFFFFFF
            if flags & FIN:
                self.peer_fin = True
                self.rcv_nxt = (self.rcv_nxt + 1) & 0xFFFFFFFF
        if (
            flags & ACK
            and 0 < (ack - self.snd_una) & 0xFFFFFFFF <= (self.snd_nxt - self.snd_una) & 0xFFFFFFFF
        ):
            self.snd_una = ack
        self.peer_window = window if flags & SYN else window << self.peer_shift
        return True

    def _deadline(self) -> float:
        return time.monotonic() + self.timeout

    # -- the connection ---------------------------------------------------------

    def connect(self) -> None:
        deadline = self._deadline()
        isn = self.snd_nxt
        self.snd_nxt = (isn + 1) & 0xFFFFFFFF
        while self.snd_una != self.snd_nxt:
            if time.monotonic() > deadline:
                raise FrontendTimeout("no SYN-ACK")
            self._send(isn, SYN)
            end = time.monotonic() + self.rto
            while self.snd_una != self.snd_nxt and time.monotonic() < end:
                self._poll(end - time.monotonic())
        self._send(self.snd_nxt, ACK)

    def send(self, data: bytes, *, tso: bool = False, tso_segments: int = 44) -> None:
        """Send ``data`` and wait until the peer acknowledged all of it."""
        if tso and not (self.fe.has(NetFeature.HOST_TSO4) and self._csum):
            raise ValueError("TSO needs CSUM and HOST_TSO4 negotiated")
        chunk = self.mss * (tso_segments if tso else 1)
        base = self.snd_una
        deadline = self._deadline()
        last_progress = time.monotonic()
        while self.snd_una != (base + len(data)) & 0xFFFFFFFF:
            sent = (self.snd_nxt - base) & 0xFFFFFFFF
            in_flight = (self.snd_nxt - self.snd_una) & 0xFFFFFFFF
            room = self.peer_window - in_flight
            # Full pieces while the window has room for them; a smaller one
            # only when nothing is in flight (a window that stays small).
            while sent < len(data) and room > 0:
                if room < min(chunk, len(data) - sent) and in_flight:
                    break
                piece = data[sent : sent + min(chunk, len(data) - sent, room)]
                in_flight += len(piece)
                self._send(self.snd_nxt, ACK | PSH, piece, gso=tso and len(piece) > self.mss)
                self.snd_nxt = (self.snd_nxt + len(piece)) & 0xFFFFFFFF
                sent += len(piece)
                room -= len(piece)
            una = self.snd_una
            self._poll(self.rto)
            now = time.monotonic()
            if self.snd_una != una:
                last_progress = now
            elif now - last_progress > self.rto:  # go back to the first unacknowledged byte
                self.snd_nxt = self.snd_una
                last_progress = now
            if now > deadline:
                raise FrontendTimeout(
                    f"{len(data) - ((self.snd_una - base) & 0xFFFFFFFF)} bytes unacknowledged"
                )

    def receive(self, count: int) -> bytes:
        """Wait for ``count`` bytes (or the peer's FIN), acknowledging as they come."""
        deadline = self._deadline()
        while len(self.received) < count and not self.peer_fin:
            if time.monotonic() > deadline:
                raise FrontendTimeout(f"{len(self.received)} of {count} bytes received")
            if self._poll(self.rto):
                self._send(self.snd_nxt, ACK)
            else:  # nothing came: repeat the last ACK (a lost one stalls the peer)
                self._send(self.snd_nxt, ACK)
        data = bytes(self.received[:count])
        del self.received[:count]
        return data

    def close(self) -> None:
        """Send FIN and wait until it is acknowledged."""
        deadline = self._deadline()
        fin_seq = self.snd_nxt
        self.snd_nxt = (fin_seq + 1) & 0xFFFFFFFF
        while self.snd_una != self.snd_nxt:
            if time.monotonic() > deadline:
                raise FrontendTimeout("FIN not acknowledged")
            self._send(fin_seq, FIN | ACK)
            self._poll(self.rto)
