"""Chaos with real processes: a 3-member etcd, two control-plane replicas,
agents on the fake power driver, a tenant workload through both replicas.

Faults one at a time, each held a few seconds then repaired: kill an etcd
member, kill the raft leader, kill the controllers' leader replica (it is
restarted on its port), SIGSTOP + SIGCONT a replica.  Afterwards etcd's
whole history is replayed: no host held by two instances at any revision,
no instance or host state change the lifecycle tables do not allow, quota
usage equal to the live instances, and nothing left in a transient state
within 60 s of the last fault.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aetcd

from control_plane.domain.compute import Instance
from control_plane.store import codec
from tools.region.agents import running_agents
from tools.region.chaos import Workload, check_history, read_history, transient
from tools.region.control_plane import Clients, ControlPlaneProcess
from tools.region.etcd import EtcdCluster
from tools.region.ports import free_port
from tools.region.world import build_world

SEAT = b"/bmaas/v1/leases/controllers"
HOLD = 5.0  # seconds a fault lasts
SETTLE = 4.0  # seconds between faults


async def _leader_pid(cluster: EtcdCluster) -> int:
    async with aetcd.Client(host=cluster.host, port=cluster.members[0].port) as client:
        for _ in range(100):
            for m in cluster.members:
                if m.running:
                    client = aetcd.Client(host=m.host, port=m.port)
                    break
            got = await client.get(SEAT)
            if got is not None:
                return int(got.value.decode().rsplit("-", 2)[1])
            await asyncio.sleep(0.2)
    raise AssertionError("no controllers' leader")


async def test_chaos_invariants_hold_through_one_fault_at_a_time(tmp_path: Path) -> None:
    cluster = EtcdCluster(3).start()
    ports = [free_port(), free_port()]
    replicas = [
        ControlPlaneProcess(
            cluster, lease_ttl=3, allow_fake_power=True, extra_args=("--listen", f"127.0.0.1:{p}")
        )
        for p in ports
    ]
    workload: Workload | None = None
    try:
        for r in replicas:
            await asyncio.to_thread(r.start)
        async with Clients(ports[0]) as c:
            world = await build_world(c, hosts=6)
        async with running_agents(port=ports, hosts=world.hosts, state_root=tmp_path):
            workload = Workload(
                ports,
                tenant=world.tenant,
                token=world.token,
                itype=world.instance_type,
                image=world.image,
                workers=4,
            )
            workload.start()
            await asyncio.sleep(SETTLE)

            # 1. an etcd member that is not the raft leader
            leader = cluster.leader_index()
            victim = (leader + 1) % 3
            cluster.kill(victim)
            await asyncio.sleep(HOLD)
            await asyncio.to_thread(cluster.restart, victim)
            await asyncio.sleep(SETTLE)

            # 2. the raft leader
            leader = cluster.leader_index()
            cluster.kill(leader)
            await asyncio.sleep(HOLD)
            await asyncio.to_thread(cluster.restart, leader)
            await asyncio.sleep(SETTLE)

            # 3. the controllers' leader replica (SIGKILL: its lease must expire)
            pid = await _leader_pid(cluster)
            dead = next(r for r in replicas if r.proc is not None and r.proc.pid == pid)
            dead.kill()
            await asyncio.sleep(HOLD)
            await asyncio.to_thread(dead.start)
            await asyncio.sleep(SETTLE)

            # 4. SIGSTOP + SIGCONT the controllers' leader replica
            pid = await _leader_pid(cluster)
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(HOLD)
            finally:
                os.kill(pid, signal.SIGCONT)
            faults_end = time.monotonic()
            await asyncio.sleep(SETTLE)
            await workload.stop()
            cycles = workload.cycles
            workload = None
            assert cycles >= 8, f"only {cycles} create/terminate cycles completed"

            # nothing left in a transient state within 60 s of the last fault
            async with aetcd.Client(host=cluster.host, port=cluster.members[0].port) as client:
                while True:
                    events = await read_history(client)
                    stuck = transient(events)
                    if not stuck or time.monotonic() - faults_end > 60:
                        break
                    await asyncio.sleep(1.0)
            if stuck:
                _dump(tmp_path / "history.txt", events, stuck)
            assert not stuck, stuck
        violations = check_history(events)
        assert violations.revisions > 100
        assert not violations.all, violations.all
    finally:
        if workload is not None:
            await workload.stop()
        for i, r in enumerate(replicas):
            (tmp_path / f"replica{i}.log").write_text(r.tail(100_000))
            r.close()
        cluster.stop()


def _dump(path: Path, events: list[tuple[int, bool, bytes, bytes]], stuck: list[str]) -> None:
    """The history of the stuck instances and of their hosts (a debugging aid)."""
    ids = [s.split(":")[0].rsplit("/", 1)[-1] for s in stuck]
    hosts = {
        codec.decode(Instance, value).host.rsplit("/", 1)[-1]
        for _, deleted, key, value in events
        if not deleted and b"/instances/" in key and any(i.encode() in key for i in ids)
    }
    marks = [f"/{i}" for i in ids] + [f"/{h}" for h in hosts if h]
    path.write_text(
        "\n".join(
            f"{rev} {'DEL' if deleted else 'PUT'} {key.decode()} {value.decode()[:600]}"
            for rev, deleted, key, value in events
            if any(key.decode().endswith(m) for m in marks)
        )
    )
