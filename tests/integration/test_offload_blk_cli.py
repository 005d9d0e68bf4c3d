"""``offload-blk``: start-up errors, clean shutdown, serving, reconnect, online resize.

The daemon runs as a real process (the venv's ``offload-blk`` script); I/O goes
through ``offload.testing.VhostUserBlkFrontend`` over the real socket.  The
back-end request channel (CONFIG_CHANGE_MSG) is checked in-process with a raw
front-end, since the test front-end does not negotiate BACKEND_REQ.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from offload.cli import BlkService
from offload.testing import VhostUserBlkFrontend
from offload.vhost_user.messages import (
    HEADER,
    BackendRequest,
    Flags,
    FrontendRequest,
    ProtocolFeature,
    encode_message,
)
from tools.region.blk_backends import find_offload_blk

pytestmark = pytest.mark.integration

MiB = 1 << 20


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    with path.open("wb") as f:
        f.truncate(8 * MiB)
    return path


def run_blk(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_offload_blk(), *args], capture_output=True, text=True, timeout=timeout
    )


class Daemon:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [find_offload_blk(), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_for_socket(self, path: Path, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            assert self.proc.poll() is None, self.proc.communicate()[0]
            assert time.monotonic() < deadline, "no socket"
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            raise
        return self.proc.returncode, out


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.communicate()


def start(daemons: list[Daemon], sock: Path, image: Path, *extra: str) -> Daemon:
    d = Daemon("--socket", str(sock), "--image", str(image), *extra)
    daemons.append(d)
    d.wait_for_socket(sock)
    return d


# --------------------------------------------------------------------------- errors


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("offload-blk: error: ")
    return lines[0]


def test_missing_image_is_one_line_error(tmp_path: Path) -> None:
    result = run_blk("--socket", str(tmp_path / "s.sock"), "--image", str(tmp_path / "nope.img"))
    assert result.returncode == 1
    assert "nope.img" in one_line_error(result)
    assert not (tmp_path / "s.sock").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--queues", "0"], "--queues"),
        (["--queues", "many"], "not a number"),
        (["--queues", "1000"], "--queues"),
        (["--queue-size", "100"], "power of two"),
        (["--queue-size", "4096"], "--queue-size"),
    ],
)
def test_bad_numbers_are_one_line_errors(
    tmp_path: Path, image: Path, args: list[str], needle: str
) -> None:
    result = run_blk("--socket", str(tmp_path / "s.sock"), "--image", str(image), *args)
    assert result.returncode == 2
    assert needle in one_line_error(result)


def test_missing_required_arguments(tmp_path: Path) -> None:
    result = run_blk("--socket", str(tmp_path / "s.sock"))
    assert result.returncode == 2
    assert "--image" in one_line_error(result)


def test_socket_of_a_live_listener_is_refused(
    tmp_path: Path, image: Path, daemons: list[Daemon]
) -> None:
    sock = tmp_path / "s.sock"
    first = start(daemons, sock, image)
    result = run_blk("--socket", str(sock), "--image", str(image))
    assert result.returncode == 1
    assert "in use" in one_line_error(result)
    # The first daemon still owns and serves its socket.
    assert sock.exists()
    with VhostUserBlkFrontend(sock) as fe:
        assert fe.queues[0].write(0, b"a" * 512).status == 0
    code, _ = first.stop()
    assert code == 0


def test_stale_socket_file_is_replaced(tmp_path: Path, image: Path, daemons: list[Daemon]) -> None:
    sock = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # the file stays, nobody listens: a dead back-end's leftover
    d = start(daemons, sock, image)
    with VhostUserBlkFrontend(sock) as fe:
        assert fe.queues[0].read(0, 512).status == 0
    assert d.stop()[0] == 0


def test_path_that_is_not_a_socket_is_refused(tmp_path: Path, image: Path) -> None:
    sock = tmp_path / "s.sock"
    sock.write_text("precious")
    result = run_blk("--socket", str(sock), "--image", str(image))
    assert result.returncode == 1
    assert "not a socket" in one_line_error(result)
    assert sock.read_text() == "precious"


# --------------------------------------------------------------------------- serving


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly_and_removes_socket(
    tmp_path: Path, image: Path, daemons: list[Daemon], sig: int
) -> None:
    sock = tmp_path / "s.sock"
    d = start(daemons, sock, image)
    code, out = d.stop(sig)
    assert code == 0, out
    assert not sock.exists()


def test_shutdown_while_a_front_end_is_connected(
    tmp_path: Path, image: Path, daemons: list[Daemon]
) -> None:
    sock = tmp_path / "s.sock"
    d = start(daemons, sock, image, "--queues", "2")
    fe = VhostUserBlkFrontend(sock, num_queues=2)
    try:
        assert fe.queues[1].write(8, b"z" * 4096).status == 0
        code, out = d.stop()
        assert code == 0, out
        assert not sock.exists()
    finally:
        fe.close(stop_rings=False)


def test_serves_io_and_accepts_the_next_front_end(
    tmp_path: Path, image: Path, daemons: list[Daemon]
) -> None:
    sock = tmp_path / "s.sock"
    d = start(daemons, sock, image, "--queues", "2", "--serial", "disk-42")
    payload = os.urandom(64 * 1024)
    with VhostUserBlkFrontend(sock, num_queues=2) as fe:
        cfg = fe.blk_config
        assert cfg.capacity == 8 * MiB // 512 and cfg.num_queues == 2
        assert fe.queues[0].write(100, payload).status == 0
        assert fe.queues[1].read(100, len(payload)).data == payload
        assert fe.queues[0].get_id().data.rstrip(b"\0") == b"disk-42"
        assert fe.queues[1].flush().status == 0
    assert image.read_bytes()[100 * 512 : 100 * 512 + len(payload)] == payload
    # Disconnected: the daemon listens again, and the rings resume.
    with VhostUserBlkFrontend(sock, num_queues=2) as fe:
        assert fe.queues[0].read(100, 512).data == payload[:512]
    assert d.proc.poll() is None
    assert d.stop()[0] == 0


def test_read_only_refuses_writes(tmp_path: Path, image: Path, daemons: list[Daemon]) -> None:
    sock = tmp_path / "s.sock"
    d = start(daemons, sock, image, "--read-only")
    with VhostUserBlkFrontend(sock) as fe:
        assert fe.offered(5)  # VIRTIO_BLK_F_RO
        assert fe.queues[0].write(0, b"x" * 512).status != 0
        assert fe.queues[0].read(0, 512).status == 0
    assert image.read_bytes()[:512] == bytes(512)
    assert d.stop()[0] == 0


def test_sighup_after_growing_the_image_resizes_online(
    tmp_path: Path, image: Path, daemons: list[Daemon]
) -> None:
    sock = tmp_path / "s.sock"
    d = start(daemons, sock, image)
    with VhostUserBlkFrontend(sock) as fe:
        assert fe.get_config().capacity == 8 * MiB // 512
        os.truncate(image, 16 * MiB)
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while fe.get_config().capacity != 16 * MiB // 512:
            assert time.monotonic() < deadline, "capacity never grew"
            time.sleep(0.05)
        assert fe.queues[0].write(16 * MiB // 512 - 8, b"e" * 4096).status == 0
    code, out = d.stop()
    assert code == 0 and "resizing online" in out


# --------------------------------------------------------------------------- back-end channel

U64 = struct.Struct("=Q")


def _request(
    sock: socket.socket, req: int, payload: bytes = b"", fds: list[int] | None = None
) -> bytes:
    data = encode_message(req, payload, flags=Flags.VERSION | Flags.NEED_REPLY)
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.sendall(data)
    header = sock.recv(HEADER.size, socket.MSG_WAITALL)
    _, flags, size = HEADER.unpack(header)
    assert flags & Flags.REPLY
    return sock.recv(size, socket.MSG_WAITALL) if size else b""


def test_config_change_message_on_the_backend_channel(tmp_path: Path, image: Path) -> None:
    sock_path = tmp_path / "s.sock"
    with BlkService(socket_path=sock_path, image=image) as svc:
        front = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        front.settimeout(10)
        front.connect(str(sock_path))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.settimeout(10)
        try:
            R = FrontendRequest
            features = ProtocolFeature.CONFIG | ProtocolFeature.REPLY_ACK
            features |= ProtocolFeature.BACKEND_REQ
            _request(front, R.SET_PROTOCOL_FEATURES, U64.pack(features))
            ack = _request(front, R.SET_BACKEND_REQ_FD, fds=[theirs.fileno()])
            assert U64.unpack(ack) == (0,)
            theirs.close()
            os.truncate(image, 32 * MiB)
            assert svc.check_resize()
            header = ours.recv(HEADER.size, socket.MSG_WAITALL)
            request, flags, size = HEADER.unpack(header)
            assert request == BackendRequest.CONFIG_CHANGE_MSG and size == 0
            assert flags == Flags.VERSION | Flags.NEED_REPLY
            # As QEMU does: read the new config before acknowledging.
            cfg = _request(front, R.GET_CONFIG, struct.pack("=III", 0, 8, 0) + bytes(8))
            assert struct.unpack_from("=Q", cfg, 12) == (32 * MiB // 512,)
            ours.sendall(encode_message(request, U64.pack(0), flags=Flags.VERSION | Flags.REPLY))
        finally:
            front.close()
            ours.close()


def test_garbage_closes_only_that_connection(tmp_path: Path, image: Path) -> None:
    sock_path = tmp_path / "s.sock"
    with BlkService(socket_path=sock_path, image=image) as svc:
        bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bad.settimeout(10)
        bad.connect(str(sock_path))
        # An unknown request that asks for a reply gets a failure ack; the
        # connection survives it.
        assert U64.unpack(_request(bad, 999, b"junk")) == (1,)
        assert U64.unpack(_request(bad, FrontendRequest.GET_QUEUE_NUM)) == (1,)
        # A header with a bad version is not vhost-user: the server hangs up.
        bad.sendall(HEADER.pack(FrontendRequest.GET_FEATURES, 0x2, 0))
        assert bad.recv(1) == b""
        bad.close()
        # ... and serves the next front-end as if nothing happened.
        with VhostUserBlkFrontend(sock_path) as fe:
            assert fe.queues[0].write(0, b"k" * 512).status == 0
        assert svc.server.connections == 2
