"""The card's RBD engine against a real single-node Ceph (the session's ``ceph``).

In-process ``BlkService(rbd=...)`` served to ``offload.testing``'s driver-side
front-end over the real socket: data, many requests in flight completing out
of order, discard, write-zeroes, flush, online resize, the exclusive lock
(a second opener refused), and fencing (a blocklisted client's writes fail).
The ``offload-blk`` process itself for the start-up errors.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from offload.cli import BlkService, RbdTarget
from offload.errors import StorageError, VolumeLocked
from offload.storage.fence import blocklist, fence_image, lock_owners, unblocklist
from offload.storage.rbd import RbdVolume
from offload.testing import BlkRequest, VhostUserBlkFrontend
from offload.testing.blk import BlkStatus
from tools.region.blk_backends import find_offload_blk
from tools.region.ceph import CephCluster
from tools.region.ports import free_port

pytestmark = pytest.mark.integration

MiB = 1 << 20
SECTOR = 512


@pytest.fixture
def serve(
    ceph: CephCluster, tmp_path: Path, rbd_image: Callable[[int], str]
) -> Iterator[Callable[..., tuple[BlkService, VhostUserBlkFrontend]]]:
    """Serve an RBD image in-process and connect a front-end to it.

    (It depends on ``rbd_image`` so that the images outlive the services.)
    """
    opened: list[tuple[BlkService, VhostUserBlkFrontend]] = []

    def open_(image: str, **frontend: int) -> tuple[BlkService, VhostUserBlkFrontend]:
        sock = tmp_path / f"vol{len(opened)}.sock"
        target = RbdTarget(ceph.pool, image, ceph.conf_path)
        service = BlkService(socket_path=sock, rbd=target, queues=2).start()
        try:
            fe = VhostUserBlkFrontend(sock, **frontend)
        except BaseException:
            service.close()
            raise
        opened.append((service, fe))
        return service, fe

    yield open_
    for service, fe in reversed(opened):
        fe.close()
        service.close()


def test_data_written_is_read_back_on_every_queue(
    serve: Callable[..., tuple[BlkService, VhostUserBlkFrontend]],
    rbd_image: Callable[[int], str],
    ceph: CephCluster,
) -> None:
    name = rbd_image(16 * MiB)
    _, fe = serve(name, num_queues=2)
    blocks = {q: bytes([q + 1]) * 64 * 1024 for q in range(2)}
    for q, data in blocks.items():
        assert fe.queues[q].write(q * 256, data).status == BlkStatus.OK
    for q, data in blocks.items():
        got = fe.queues[q].read(q * 256, len(data))
        assert got.status == BlkStatus.OK
        assert got.data == data
    # What the guest wrote is in the cluster, not in a cache of the card's.
    assert ceph.read_image(name, 256 * SECTOR, 64 * 1024) == blocks[1]


def test_many_requests_in_flight_complete_out_of_order(
    serve: Callable[..., tuple[BlkService, VhostUserBlkFrontend]],
    rbd_image: Callable[[int], str],
) -> None:
    name = rbd_image(64 * MiB)
    service, fe = serve(name, depth=64, max_io=4 * MiB, queue_size=128)
    q = fe.queues[0]
    big = BlkRequest.write(0, b"\xaa" * (4 * MiB))
    small = [BlkRequest.read((8 + i) * MiB // SECTOR, 4096) for i in range(32)]
    slots = [q.submit(big)] + [q.submit(r) for r in small]
    q.kick()
    order: list[int] = []
    deadline = time.monotonic() + 30
    while len(order) < len(slots):
        assert time.monotonic() < deadline, f"only {len(order)} completions"
        for slot, status in q.wait():
            assert status == BlkStatus.OK
            order.append(slot)
    assert sorted(order) == sorted(slots)
    # Small reads submitted after the 4 MiB write finished before it: the engine
    # had them in flight together and completed them as Ceph answered.
    assert order.index(slots[0]) > 0, order
    assert service.device.in_flight() == 0
    assert q.read(0, 4096).data == b"\xaa" * 4096


def test_discard_write_zeroes_and_flush(
    serve: Callable[..., tuple[BlkService, VhostUserBlkFrontend]],
    rbd_image: Callable[[int], str],
) -> None:
    name = rbd_image(16 * MiB)
    _, fe = serve(name)
    q = fe.queues[0]
    data = b"\x5a" * (128 * 1024)
    assert q.write(0, data).status == BlkStatus.OK
    assert q.write(4 * MiB // SECTOR, data).status == BlkStatus.OK
    assert q.flush().status == BlkStatus.OK
    assert q.discard(0, 64 * 1024 // SECTOR).status == BlkStatus.OK
    assert q.write_zeroes(4 * MiB // SECTOR, 8, unmap=False).status == BlkStatus.OK
    assert q.read(0, 64 * 1024).data == bytes(64 * 1024)
    assert q.read(64 * 1024 // SECTOR, 4096).data == b"\x5a" * 4096
    assert q.read(4 * MiB // SECTOR, 8 * SECTOR).data == bytes(8 * SECTOR)
    assert q.read(4 * MiB // SECTOR + 8, SECTOR).data == b"\x5a" * SECTOR
    # Past the end: an error status, nothing submitted.
    assert q.read(16 * MiB // SECTOR, 4096).status == BlkStatus.IOERR


def test_resize_reaches_the_driver(
    serve: Callable[..., tuple[BlkService, VhostUserBlkFrontend]],
    rbd_image: Callable[[int], str],
    ceph: CephCluster,
) -> None:
    name = rbd_image(8 * MiB)
    service, fe = serve(name)
    assert fe.get_config().capacity == 8 * MiB // SECTOR
    ceph.resize_image(name, 24 * MiB)
    assert service.check_resize()
    assert fe.get_config().capacity == 24 * MiB // SECTOR
    q = fe.queues[0]
    assert q.write(20 * MiB // SECTOR, b"\x11" * 4096).status == BlkStatus.OK
    assert q.read(20 * MiB // SECTOR, 4096).data == b"\x11" * 4096


def test_second_opener_is_refused(
    serve: Callable[..., tuple[BlkService, VhostUserBlkFrontend]],
    rbd_image: Callable[[int], str],
    ceph: CephCluster,
) -> None:
    name = rbd_image(8 * MiB)
    service, fe = serve(name)
    assert fe.queues[0].write(0, b"\x01" * 4096).status == BlkStatus.OK
    owners = lock_owners(ceph.conf_path, ceph.pool, name)
    assert owners == [service.volume.client_address]  # type: ignore[attr-defined]
    with pytest.raises(VolumeLocked, match="held by another client"):
        RbdVolume(pool=ceph.pool, image=name, conf=ceph.conf_path)
    # The holder kept its disk and its data.
    assert fe.queues[0].read(0, 4096).data == b"\x01" * 4096
    assert lock_owners(ceph.conf_path, ceph.pool, name) == owners


def test_blocklisted_client_writes_fail(
    serve: Callable[..., tuple[BlkService, VhostUserBlkFrontend]],
    rbd_image: Callable[[int], str],
    ceph: CephCluster,
) -> None:
    """Failover's order: fence the holder, the new card opens the disk, and from
    then on every write of the old card fails (none lands behind the new one's back)."""
    name = rbd_image(8 * MiB)
    service, fe = serve(name)
    q = fe.queues[0]
    assert q.write(0, b"\x01" * 4096).status == BlkStatus.OK
    address = service.volume.client_address  # type: ignore[attr-defined]
    fenced = fence_image(ceph.conf_path, ceph.pool, name, expire=600)
    assert fenced == [address]
    try:
        with RbdVolume(pool=ceph.pool, image=name, conf=ceph.conf_path) as taker:
            assert q.write(0, b"\x02" * 4096).status == BlkStatus.IOERR
            assert q.write(8, b"\x02" * 4096).status == BlkStatus.IOERR
            assert q.flush().status in (BlkStatus.OK, BlkStatus.IOERR)
            assert service.device.stats().errors["io"] >= 2
            # The new card reads what the fenced one wrote before the fence, no more.
            view = memoryview(bytearray(8192))
            taker.preadv([view], 0)
            assert bytes(view) == b"\x01" * 4096 + bytes(4096)
            assert lock_owners(ceph.conf_path, ceph.pool, name) == [taker.client_address]
    finally:
        unblocklist(ceph.conf_path, address)


def test_blocklist_helper_refuses_garbage(ceph: CephCluster) -> None:
    with pytest.raises(StorageError, match="osd blocklist add"):
        blocklist(ceph.conf_path, "not-an-address")


# --------------------------------------------------------------------------- the process


def run_blk(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_offload_blk(), *args], capture_output=True, text=True, timeout=timeout
    )


def test_cli_missing_pool_and_image_are_one_line_errors(
    ceph: CephCluster, rbd_image: Callable[[int], str], tmp_path: Path
) -> None:
    sock = str(tmp_path / "x.sock")
    conf = str(ceph.conf_path)
    out = run_blk("--socket", sock, "--rbd", "nopool/img", "--ceph-conf", conf)
    assert out.returncode == 1
    assert out.stderr == "offload-blk: error: pool nopool does not exist\n"
    out = run_blk("--socket", sock, "--rbd", f"{ceph.pool}/nothere", "--ceph-conf", conf)
    assert out.returncode == 1
    assert out.stderr == f"offload-blk: error: image {ceph.pool}/nothere does not exist\n"
    assert not ceph.image_exists("nothere")
    assert not Path(sock).exists()


def test_cli_refuses_a_disk_another_card_holds(
    serve: Callable[..., tuple[BlkService, VhostUserBlkFrontend]],
    ceph: CephCluster,
    rbd_image: Callable[[int], str],
    tmp_path: Path,
) -> None:
    name = rbd_image(8 * MiB)
    serve(name)
    out = run_blk(
        "--socket", str(tmp_path / "y.sock"), "--rbd", f"{ceph.pool}/{name}",
        "--ceph-conf", str(ceph.conf_path),
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr == f"offload-blk: error: image {ceph.pool}/{name} is held by another client\n"


def test_cli_unreachable_cluster_gives_up_in_time(tmp_path: Path) -> None:
    conf = tmp_path / "ceph.conf"
    conf.write_text(
        f"[global]\nmon host = v2:127.0.0.1:{free_port()}\nauth client required = none\n"
    )
    started = time.monotonic()
    out = run_blk(
        "--socket", str(tmp_path / "z.sock"), "--rbd", "p/i", "--ceph-conf", str(conf),
        "--ceph-timeout", "2",
    )  # fmt: skip
    took = time.monotonic() - started
    assert out.returncode == 1
    assert out.stderr.startswith("offload-blk: error: cannot reach the Ceph cluster")
    assert out.stderr.count("\n") == 1
    assert took < 20, took


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rbd", "p/i"], "--rbd needs --ceph-conf FILE"),
        (["--rbd", "noslash", "--ceph-conf", "/x"], "--rbd: 'noslash' is not POOL/IMAGE"),
        (["--rbd", "p/i", "--ceph-conf", "/no.conf"], "ceph config /no.conf does not exist"),
        (["--image", "/x", "--ceph-conf", "/x"], "--ceph-conf only goes with --rbd"),
    ],
)
def test_cli_bad_rbd_arguments(args: list[str], message: str, tmp_path: Path) -> None:
    out = run_blk("--socket", str(tmp_path / "w.sock"), *args)
    assert out.returncode == 1
    assert out.stderr == f"offload-blk: error: {message}\n"


def test_cli_image_and_rbd_are_exclusive(tmp_path: Path) -> None:
    out = run_blk("--socket", str(tmp_path / "v.sock"), "--image", "/x", "--rbd", "p/i")
    assert out.returncode == 2
    assert "not allowed with argument" in out.stderr
    assert out.stderr.count("\n") == 1


def test_cli_serves_reports_its_client_and_releases_the_lock_on_sigterm(
    ceph: CephCluster, rbd_image: Callable[[int], str], tmp_path: Path
) -> None:
    name = rbd_image(8 * MiB)
    sock, stats = tmp_path / "s.sock", tmp_path / "stats.json"
    proc = subprocess.Popen(
        [
            find_offload_blk(), "--socket", str(sock), "--rbd", f"{ceph.pool}/{name}",
            "--ceph-conf", str(ceph.conf_path), "--stats", str(stats),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (sock.exists() and stats.exists()):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no socket or stats"
            time.sleep(0.05)
        with VhostUserBlkFrontend(sock) as fe:
            assert fe.queues[0].write(0, b"\x42" * 4096).status == BlkStatus.OK
        report = json.loads(stats.read_text())
        assert report["size_bytes"] == 8 * MiB
        assert lock_owners(ceph.conf_path, ceph.pool, name) == [report["rbd_client_address"]]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert lock_owners(ceph.conf_path, ceph.pool, name) == []
    assert ceph.read_image(name, 0, 4096) == b"\x42" * 4096
