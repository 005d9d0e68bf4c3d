"""``bench.net``'s 64 KiB send case: a guest's TCP stream through offload-net, with and without TSO.

The guest is ``offload.testing``'s front-end with its small TCP
(``offload.testing.tcp.GuestTcp``) in this process, on the front-end's CPU;
offload-net is the same process as in the packet-rate runs (its TAP on the
namespace's bridge).  The peer is a kernel TCP socket on the bridge's address
in that namespace, read by a small Python reader pinned to the front-end's
CPU; it only counts bytes.  The stream is written in 1 MiB calls of
``GuestTcp.send``, each cut into pieces of 64,240 bytes (44 MSS of 1460):

* ``no-offload``: the feature set before offloads (no CSUM, no TSO): 44
  frames of 1460 bytes per piece, every checksum computed by the guest;
* ``csum``: CSUM negotiated, no TSO: 44 frames per piece, checksums left to
  the device (the TAP);
* ``tso``: CSUM and HOST_TSO4: one TSO frame per piece (``gso_size`` 1460).

The window is the peer's, without scaling (at most 64 KiB in flight), the
same in every mode.  A run sends for ``seconds`` (after a 1 MiB warm-up) and
records the bytes the peer acknowledged per second, offload-net's CPU
(utime+stime of the process) per MiB, and the front-end thread's CPU per MiB
(to show which side is the bottleneck).  Modes alternate within each round.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.net_report import SendMode, SendResult
from offload.testing.net import VhostUserNetFrontend
from offload.testing.tcp import GuestTcp

__all__ = ["SEND_MODES", "SendBench"]

SEND_MODES: tuple[SendMode, ...] = ("no-offload", "csum", "tso")
GUEST_IP = "10.83.0.2"
PEER_IP = "10.83.0.1"
PORT = 5201
CHUNK = 1 << 20
MIB = 1 << 20

# The peer: accept connections one after the other, count every byte, print the total.
_READER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(4)
print("listening", flush=True)
buf = bytearray(1 << 20)
while True:
    c, _ = s.accept()
    total = 0
    while n := c.recv_into(buf):
        total += n
    c.close()
    print(total, flush=True)
"""


class SendBench:
    """The peer reader and the guest's connections; ``close()`` stops the reader."""

    def __init__(
        self,
        *,
        netns: str,
        bridge: str,
        socket_path: Path,
        guest_mac: str,
        frontend_cpu: int,
        backend_cpu_seconds: Callable[[], float],
    ) -> None:
        self.netns = netns
        self.socket_path = socket_path
        self.guest_mac = bytes.fromhex(guest_mac.replace(":", ""))
        self.backend_cpu_seconds = backend_cpu_seconds
        run = ["ip", "netns", "exec", netns]
        subprocess.run([*run, "ip", "addr", "add", f"{PEER_IP}/24", "dev", bridge], check=True)
        neigh = ["ip", "neigh", "replace", GUEST_IP, "lladdr", guest_mac, "dev", bridge]
        subprocess.run([*run, *neigh, "nud", "permanent"], check=True)
        link = subprocess.run(
            [*run, "ip", "-j", "link", "show", bridge], check=True, capture_output=True, text=True
        )
        self.peer_mac = bytes.fromhex(json.loads(link.stdout)[0]["address"].replace(":", ""))
        self.reader = subprocess.Popen(
            [
                *run,
                "taskset",
                "-c",
                str(frontend_cpu),
                sys.executable,
                "-c",
                _READER,
                PEER_IP,
                str(PORT),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.reader.stdout is not None
        if self.reader.stdout.readline().strip() != "listening":
            raise RuntimeError("the peer reader did not start")
        self._affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {frontend_cpu})  # until close(): children inherit it
        self._port = 40000 + secrets.randbelow(10000)

    def run(self, mode: SendMode, index: int, seconds: float) -> SendResult:
        offloads = mode != "no-offload"
        with VhostUserNetFrontend(
            str(self.socket_path), queue_size=256, offloads=offloads, timeout=30
        ) as fe:
            fe.post_rx(count=256)
            self._port += 1
            tcp = GuestTcp(
                fe,
                mac=self.guest_mac,
                ip=socket.inet_aton(GUEST_IP),
                peer_mac=self.peer_mac,
                peer_ip=socket.inet_aton(PEER_IP),
                peer_port=PORT,
                port=self._port,
                timeout=60,
            )
            data = os.urandom(CHUNK)
            tso = mode == "tso"
            tcp.connect()
            tcp.send(data, tso=tso)  # warm-up
            frames0 = tcp.frames_sent
            t0, cpu0, fe0 = time.perf_counter(), self.backend_cpu_seconds(), time.thread_time()
            sent = 0
            while time.perf_counter() - t0 < seconds:
                tcp.send(data, tso=tso)
                sent += len(data)
            t1, cpu1, fe1 = time.perf_counter(), self.backend_cpu_seconds(), time.thread_time()
            frames = tcp.frames_sent - frames0
            tcp.close()
        assert self.reader.stdout is not None
        received = int(self.reader.stdout.readline())
        if received != sent + len(data):
            raise RuntimeError(f"the peer got {received} bytes of {sent + len(data)}")
        elapsed = t1 - t0
        mib = sent / MIB
        return SendResult(
            mode=mode,
            run=index + 1,
            bytes=sent,
            seconds=round(elapsed, 3),
            mib_per_s=round(mib / elapsed, 2),
            frames_per_mib=round(frames / mib, 1),
            backend_cpu_ms_per_mib=round((cpu1 - cpu0) * 1e3 / mib, 3),
            frontend_cpu_ms_per_mib=round((fe1 - fe0) * 1e3 / mib, 3),
        )

    def close(self) -> None:
        os.sched_setaffinity(0, self._affinity)
        self.reader.terminate()
        try:
            self.reader.wait(10)
        except subprocess.TimeoutExpired:
            self.reader.kill()
            self.reader.wait(10)
