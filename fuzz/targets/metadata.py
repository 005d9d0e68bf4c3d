"""The metadata HTTP service: a request over a real TCP exchange through ``classify_tx``.

The target plays a guest's HTTP client: SYN to 169.254.169.254:80, the ACK
of the card's SYN-ACK (whose random ISN it reads from the reply), then the
input as the request, cut into ``1 + data[0] % 4`` segments, then ACKs for
everything the card sends until it stops (at most 32 rounds).  The card
must answer the handshake, and whatever response it sends must be a
well-framed HTTP/1.x response: a status line, a head ending in an empty
line, and a body as long as its Content-Length (none for HEAD).  Every
frame must also be well formed (``fuzz.nic``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from fuzz.nic import METADATA_IP, Nic, eth, ipv4, tcp

__all__ = ["MAX_LEN", "make", "seeds"]

MAX_LEN: Final = 4096
PORT: Final = 40000
_SYN, _ACK, _FIN, _PSH = 0x02, 0x10, 0x01, 0x08
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)[ \t]*\r\n", re.IGNORECASE)


class BadResponse(AssertionError):
    """The metadata service sent something that is not a well-framed HTTP response."""


def _segment(seq: int, ack: int, flags: int, payload: bytes = b"", mss: int | None = None) -> bytes:
    seg = tcp(sport=PORT, dport=80, seq=seq, ack=ack, flags=flags, payload=payload, mss=mss)
    return eth(ipv4(seg, 6, dst=METADATA_IP))


def _tcp_of(frame: bytes) -> tuple[int, int, bytes] | None:
    """(seq, flags, payload) of a TCP reply to our port, or None."""
    packet = frame[14:]
    if frame[12:14] != b"\x08\x00" or len(packet) < 40 or packet[9] != 6:
        return None
    seg = packet[20:]
    if int.from_bytes(seg[2:4], "big") != PORT:
        return None
    return int.from_bytes(seg[4:8], "big"), seg[13], seg[(seg[12] >> 4) * 4 :]


def check_response(response: bytes, request: bytes) -> None:
    if not response:
        return
    if not re.match(rb"HTTP/1\.[01] [1-5]\d\d [^\r\n]*\r\n", response):
        raise BadResponse(f"no status line: {response[:40]!r}")
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep:
        raise BadResponse("the response head never ends")
    match = _CONTENT_LENGTH.search(head + b"\r\n")
    if match is None:
        raise BadResponse("no Content-Length")
    if not request.startswith(b"HEAD ") and int(match.group(1)) != len(body):
        raise BadResponse(f"Content-Length {int(match.group(1))} for a body of {len(body)} bytes")


def make() -> Callable[[bytes], None]:
    def one(data: bytes) -> None:
        if not data:
            return
        pieces, request = 1 + data[0] % 4, data[1:]
        nic = Nic()
        nic.send(_segment(1000, 0, _SYN, mss=1460))
        synack = [t for t in map(_tcp_of, nic.replies) if t is not None and t[1] & _SYN]
        if not synack:
            raise BadResponse("no SYN-ACK to a SYN")
        rcv = (synack[0][0] + 1) & 0xFFFFFFFF
        seq = 1001
        nic.send(_segment(seq, rcv, _ACK))
        seen = len(nic.replies)
        step = max(1, -(-len(request) // pieces))
        for i in range(0, len(request), step):
            nic.send(_segment(seq, rcv, _ACK | _PSH, request[i : i + step]))
            seq += len(request[i : i + step])
        response = b""
        fin = False
        for _ in range(32):
            new = [t for t in map(_tcp_of, nic.replies[seen:]) if t is not None]
            seen = len(nic.replies)
            progressed = False
            for s, flags, payload in new:
                if s == rcv and payload:
                    response += payload
                    rcv = (rcv + len(payload)) & 0xFFFFFFFF
                    progressed = True
                if flags & _FIN and s + len(payload) == rcv and not fin:
                    rcv = (rcv + 1) & 0xFFFFFFFF
                    fin = progressed = True
            if not progressed:
                break
            nic.send(_segment(seq, rcv, _ACK | (_FIN if fin else 0)))
        check_response(response, request)

    return one


def seeds() -> dict[str, bytes]:
    host = b"Host: 169.254.169.254\r\n"
    return {
        "get_meta_data_index": b"\0GET /latest/meta-data/ HTTP/1.1\r\n" + host + b"\r\n",
        "get_user_data_in_three_segments": b"\2GET /latest/user-data HTTP/1.1\r\n"
        + host
        + b"Accept: */*\r\n\r\n",
        "get_public_key": b"\0GET /latest/meta-data/public-keys/0/openssh-key HTTP/1.0\r\n\r\n",
        "head_instance_id": b"\1HEAD /latest/meta-data/instance-id HTTP/1.1\r\n" + host + b"\r\n",
        "put_token_v2": b"\0PUT /latest/api/token HTTP/1.1\r\n"
        + host
        + b"X-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\n\r\n",
        "bare_lf_and_query": b"\0GET /latest?x=1 HTTP/1.1\n\n",
        "not_found": b"\0GET /nope HTTP/1.1\r\n\r\n",
        "garbage_request_line": b"\0\x00\xffGET\r\n\r\n",
    }
