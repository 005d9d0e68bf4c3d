"""The Ceph launcher: a real monitor and OSD, a pool for RBD, and nothing left after stop."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tools.region.ceph import CephCluster
from tools.region.process import StartError, alive, stop_process

pytestmark = pytest.mark.integration


def test_session_cluster_serves_rbd_images(
    ceph: CephCluster, rbd_image: Callable[[int], str]
) -> None:
    pools = json.loads(
        ceph.mon_command({"prefix": "osd pool ls", "detail": "detail", "format": "json"})
    )
    pool = next(p for p in pools if p["pool_name"] == ceph.pool)
    assert pool["size"] == 1
    assert "rbd" in pool["application_metadata"]
    name = rbd_image(4 << 20)
    assert ceph.image_exists(name)
    assert ceph.image_size(name) == 4 << 20
    ceph.write_image(name, 4096, b"ceph" * 1024)
    assert ceph.read_image(name, 4096, 8) == b"cephceph"
    ceph.resize_image(name, 8 << 20)
    assert ceph.image_size(name) == 8 << 20
    assert ceph.lock_owners(name) == []
    assert ceph.conf_path.is_file()


def test_stop_kills_its_daemons_and_removes_its_dir() -> None:
    cluster = CephCluster(osd_size=1 << 30).start()
    pids, directory = cluster.pids, cluster.dir
    assert len(pids) == 2 and all(alive(p) for p in pids)
    assert cluster.start_seconds > 0
    cluster.stop()
    deadline = time.monotonic() + 15
    while any(alive(p) for p in pids):
        assert time.monotonic() < deadline, f"still running: {pids}"
        time.sleep(0.1)
    assert not directory.exists()


def test_a_detached_cluster_outlives_its_launcher_and_stops_by_pid(tmp_path: Path) -> None:
    data = tmp_path / "ceph"
    cluster = CephCluster(data_dir=data, detached=True, osd_size=1 << 30).start()
    pids, conf = cluster.pids, cluster.conf_path
    # What the demo records, and how ``make demo-down`` stops it from another process.
    assert all(os.getsid(p) == p for p in pids)
    del cluster
    for pid in pids:
        stop_process(pid)
    assert not any(alive(p) for p in pids)
    assert conf.is_file()  # the caller's files are the caller's to remove


def test_a_daemon_that_cannot_start_is_an_error_with_its_log() -> None:
    # An OSD file too small for bluestore: ceph-osd --mkfs fails, start() says so.
    cluster = CephCluster(osd_size=1 << 20)
    directory = cluster.dir
    with pytest.raises(StartError, match="ceph-osd"):
        cluster.start(timeout=60)
    assert not directory.exists()
    assert not any(alive(p) for p in cluster.pids)
