"""Chaos benchmark (not a test): availability of each replica through faults.

The set-up of ``tests/integration/control_plane/test_chaos.py``: a 3-member
etcd on loopback, two control-plane replicas (``bmaas-control-plane``
processes given every member), in-process agents on the ``fake`` power
driver connected to both replicas, and tenant workers (half on each
replica) looping create -> RUNNING -> terminate -> TERMINATED.  Faults one
at a time, each held ``--hold`` seconds, then ``--settle`` seconds of calm:

- ``etcd-member``: SIGKILL an etcd member that is not the raft leader;
- ``etcd-leader``: SIGKILL the raft leader;
- ``controllers-leader``: SIGKILL the replica holding the controllers' seat
  (restarted on its port after the hold);
- ``replica-sigstop``: SIGSTOP the replica holding the seat, SIGCONT after
  the hold.

Per fault and replica: the error rate of the workload's calls (UNAVAILABLE
or DEADLINE_EXCEEDED) from the fault to the end of its settle period and
the longest unavailability (first failed call to the next good one); per
replica fault: the controllers' handover (fault to the seat held by the
other replica).  Finally etcd's whole history is replayed for the
invariants (``tools.region.chaos.check_history``).  Writes
``bench/results/chaos.json`` and the section between ``<!-- chaos:begin -->``
and ``<!-- chaos:end -->`` of ``docs/benchmarks.md``.  Targets: at most 3 s
of unavailability on any replica, handover at most 3 s, zero violations.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import aetcd

from bench.doc import write_section
from tools.region.agents import running_agents
from tools.region.chaos import Workload, check_history, read_history
from tools.region.control_plane import Clients, ControlPlaneProcess
from tools.region.etcd import EtcdCluster
from tools.region.ports import free_port
from tools.region.world import build_world

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SEAT = b"/bmaas/v1/leases/controllers"


async def _seat_pid(cluster: EtcdCluster) -> int | None:
    for m in cluster.members:
        if not m.running:
            continue
        try:
            async with aetcd.Client(host=m.host, port=m.port, timeout=2) as client:
                got = await client.get(SEAT)
        except Exception:
            continue
        return int(got.value.decode().rsplit("-", 2)[1]) if got is not None else None
    return None


async def _handover(cluster: EtcdCluster, old_pid: int, within: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < within:
        pid = await _seat_pid(cluster)
        if pid is not None and pid != old_pid:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    return None


async def run(*, hold: float, settle: float, workers: int, lease_ttl: int) -> dict[str, Any]:
    cluster = EtcdCluster(3).start()
    ports = [free_port(), free_port()]
    replicas = [
        ControlPlaneProcess(
            cluster,
            lease_ttl=lease_ttl,
            allow_fake_power=True,
            extra_args=("--listen", f"127.0.0.1:{p}"),
        )
        for p in ports
    ]
    faults: list[dict[str, Any]] = []
    state = Path(tempfile.mkdtemp(prefix="bmaas-chaos-"))
    try:
        for r in replicas:
            await asyncio.to_thread(r.start)
        async with Clients(ports[0]) as c:
            world = await build_world(c, hosts=max(6, workers + 2))
        async with running_agents(port=ports, hosts=world.hosts, state_root=state):
            load = Workload(
                ports,
                tenant=world.tenant,
                token=world.token,
                itype=world.instance_type,
                image=world.image,
                workers=workers,
            )
            load.start()
            await asyncio.sleep(settle)

            def index_of(pid: int) -> int:
                return next(i for i, r in enumerate(replicas) if r.proc and r.proc.pid == pid)

            async def fault(
                name: str, inject: Any, repair: Any, handover: bool, target: int | None = None
            ) -> None:
                old_pid = await _seat_pid(cluster) or 0
                t0 = time.monotonic()
                await inject()
                took = await _handover(cluster, old_pid, hold) if handover else None
                await asyncio.sleep(max(0.0, hold - (time.monotonic() - t0)))
                await repair()
                await asyncio.sleep(settle)
                t1 = time.monotonic()
                faults.append(
                    {
                        "fault": name,
                        "handover_s": round(took, 2) if took is not None else None,
                        "faulted_replica": f"R{target + 1}" if target is not None else None,
                        "replicas": {
                            f"R{i + 1}": {
                                "calls": len(load.timelines[p].window(t0, t1)),
                                "error_rate": round(load.timelines[p].error_rate(t0, t1), 4),
                                "longest_unavailable_s": round(
                                    load.timelines[p].longest_unavailability(t0, t1), 2
                                ),
                            }
                            for i, p in enumerate(ports)
                        },
                    }
                )

            victim = (cluster.leader_index() + 1) % 3

            async def kill_member() -> None:
                cluster.kill(victim)

            async def restart_member() -> None:
                await asyncio.to_thread(cluster.restart, victim)

            await fault("etcd-member", kill_member, restart_member, False)
            leader = cluster.leader_index()

            async def kill_leader() -> None:
                cluster.kill(leader)

            async def restart_leader() -> None:
                await asyncio.to_thread(cluster.restart, leader)

            await fault("etcd-leader", kill_leader, restart_leader, False)
            pid = await _seat_pid(cluster)
            dead = next(r for r in replicas if r.proc is not None and r.proc.pid == pid)

            async def kill_replica() -> None:
                dead.kill()

            async def restart_replica() -> None:
                await asyncio.to_thread(dead.start)

            await fault(
                "controllers-leader", kill_replica, restart_replica, True, index_of(pid or 0)
            )
            stopped = await _seat_pid(cluster) or 0

            async def stop_replica() -> None:
                os.kill(stopped, signal.SIGSTOP)

            async def cont_replica() -> None:
                os.kill(stopped, signal.SIGCONT)

            await fault("replica-sigstop", stop_replica, cont_replica, True, index_of(stopped))
            await load.stop()
            cycles = load.cycles
        await asyncio.sleep(5)
        async with aetcd.Client(host=cluster.host, port=cluster.members[0].port) as client:
            events = await read_history(client)
        violations = check_history(events)
    finally:
        for r in replicas:
            r.close()
        cluster.stop()
        shutil.rmtree(state, ignore_errors=True)
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "hold_s": hold,
        "settle_s": settle,
        "workers": workers,
        "lease_ttl_s": lease_ttl,
        "cycles": cycles,
        "revisions_replayed": violations.revisions,
        "violations": violations.all,
        "faults": faults,
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"Chaos (`python -m bench.chaos`, {result['date']}, {result['machine']}): "
        f"3-member etcd, 2 replicas, {result['workers']} tenant workers, "
        f"faults held {result['hold_s']} s, lease TTL {result['lease_ttl_s']} s; "
        f"{result['cycles']} create/terminate cycles, {result['revisions_replayed']} "
        f"etcd revisions replayed, **{len(result['violations'])} invariant violations**.",
        "",
        "| fault | replica | calls | error rate | longest unavailability | handover |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for f in result["faults"]:
        for name, r in f["replicas"].items():
            handover = f"{f['handover_s']} s" if f["handover_s"] is not None else "-"
            who = f"{name} (the faulted one)" if name == f["faulted_replica"] else name
            lines.append(
                f"| {f['fault']} | {who} | {r['calls']} | {r['error_rate']:.1%} "
                f"| {r['longest_unavailable_s']} s | {handover} |"
            )
    lines += [
        "",
        "The faulted replica's own row is its downtime (the workers pinned to it",
        "wait for it: held for the whole fault, plus its restart); the other",
        "replica's row is what a client that fails over sees.  Handover: from",
        "the fault until the other replica holds the controllers' seat.",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    p.add_argument("--hold", type=float, default=8.0)
    p.add_argument("--settle", type=float, default=5.0)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--lease-ttl", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "chaos.json")
    args = p.parse_args()
    result = asyncio.run(
        run(hold=args.hold, settle=args.settle, workers=args.workers, lease_ttl=args.lease_ttl)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    text = render(result)
    write_section("chaos", "Chaos: availability through faults", text, doc=DOC)
    print(text)
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
