"""The store and a replica on a real 3-member etcd cluster.

One channel spans every member (``control_plane.store.endpoints``): losing
any one member, the raft leader included, costs a replica at most a few
seconds; a comma list is a normal ``--etcd``; an unreachable etcd at
start-up is one line on stderr.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane.domain.errors import Unavailable
from control_plane.store import Store
from control_plane.store.endpoints import parse_endpoints
from tools.region.control_plane import ControlPlaneProcess
from tools.region.etcd import EtcdCluster
from tools.region.ports import free_port

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster(3) as c:
        yield c


async def _longest_outage(store: Store, seconds: float) -> float:
    """Write and read back in a loop for *seconds*; the longest stretch of failures."""
    end = time.monotonic() + seconds
    longest, failing_since = 0.0, None
    n = 0
    while time.monotonic() < end:
        n += 1
        try:
            await store.kv.txn([], [_put(b"/bmaas/test/k", str(n).encode())])
            kv = await store.kv.get(b"/bmaas/test/k")
            assert kv is not None
            if failing_since is not None:
                longest = max(longest, time.monotonic() - failing_since)
                failing_since = None
        except Unavailable:
            failing_since = failing_since or time.monotonic()
            await asyncio.sleep(0.02)
    if failing_since is not None:
        longest = max(longest, time.monotonic() - failing_since)
    return longest


def _put(key: bytes, value: bytes):  # type: ignore[no-untyped-def]
    from control_plane.store.kv import op_put

    return op_put(key, value)


async def test_the_store_survives_the_loss_of_any_member_and_of_the_raft_leader(
    cluster: EtcdCluster,
) -> None:
    store = await Store.connect(endpoints=parse_endpoints(cluster.urls), rpc_timeout=2.0)
    try:
        assert await _longest_outage(store, 1.0) == 0.0
        leader = cluster.leader_index()
        order = [i for i in range(3) if i != leader] + [leader]  # the raft leader last
        for i in order:
            cluster.kill(i)
            outage = await _longest_outage(store, 3.0)
            assert outage < 3.0, f"member {i} down: {outage:.1f} s without etcd"
            await asyncio.to_thread(cluster.restart, i)
            # the restarted member is back in the rotation within the capped backoff
            await asyncio.sleep(1.5)
        # every member serves again: kill the other two in turn, each alone
        for i in (0, 1):
            cluster.kill(i)
            assert await _longest_outage(store, 1.5) < 3.0
            await asyncio.to_thread(cluster.restart, i)
    finally:
        await store.aclose()


def test_a_replica_starts_on_a_comma_list(cluster: EtcdCluster) -> None:
    with ControlPlaneProcess(cluster) as cp:
        assert cp.port > 0


def test_an_unreachable_etcd_is_one_line_not_a_traceback() -> None:
    dead = f"http://127.0.0.1:{free_port()},http://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "control_plane.main", "--etcd", dead),
            *("--listen", "127.0.0.1:0", "--etcd-wait", "1", "--no-controllers", "--insecure"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "etcd unreachable" in line]
    assert len(errors) == 1, proc.stderr
    assert "127.0.0.1" in errors[0]
