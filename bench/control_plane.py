"""Control-plane benchmark: placements through the real gRPC API on real etcd.

Run ``python -m bench.control_plane`` (``make bench``).  What it does:

1. starts etcd (``tests/harness/etcd.py``) and ``bmaas-control-plane``
   subprocesses with ``--metrics``: by default one API replica that takes
   every client call (``--no-controllers``) plus one replica that runs the
   leader-elected controllers and serves no clients - the production shape
   (APIs active-active, controllers behind the lease), which keeps controller
   resyncs out of the API's latency (``--no-separate-controllers``: every
   replica serves and elects; ``--replicas N``: N API replicas);
2. creates an instance type, an image and ``--tenants`` tenants with tokens;
3. enrols ``--hosts`` simulated hosts (EnrollHost) and registers each with
   its own agent credential (AgentService.Register: ENROLLED -> AVAILABLE),
   all through gRPC.  No data plane and no agent per host: the controllers'
   ``simulate_agentless_hosts`` mode plays the agent for hosts that never
   heartbeated (instances go to RUNNING, cleaning is a 1 s timer).  A sample
   of ``--heartbeat-sample`` hosts gets a real ``AgentService.Connect``
   stream that heartbeats every 2 s, so liveness leases and desired-state
   pushes are part of the load;
4. for ``--seconds``, ``--workers`` closed-loop clients (spread round-robin
   over the tenants) each call CreateInstance with a fresh request_id and,
   once they hold ``--hold`` instances, TerminateInstance on their oldest -
   creates and terminates interleave as in a busy region, and terminated
   hosts flow back through CLEANING to AVAILABLE;
5. burst phase (``--burst-seconds``): the churn replicas are stopped and
   one replica without controllers takes creates only - the API's placement
   path alone, with no lifecycle work behind it.

Reported: placements/s (successful CreateInstance per second of the
workload), p50/p99 CreateInstance latency as the client sees it, etcd round
trips per placement - both the control plane's own count
(``bmaas_cp_etcd_round_trips_total``, all Range/Txn/Lease calls of API *and*
controllers) and etcd's (``grpc_server_handled_total`` on etcd's
``/metrics``) - divided by placements, CPU seconds per placement of the control-plane
processes, etcd and the bench client (``/proc/PID/stat``), and each
replica's peak RSS (``VmHWM``).  The machine's load average is recorded:
other work on a shared machine depresses the numbers.  Writes
``bench/results/control_plane.json`` and the section between
``<!-- cp:begin -->`` and ``<!-- cp:end -->`` of ``docs/benchmarks.md``
(the rest of the file is left alone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import re
import statistics
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import grpc

from bmaas.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    common_pb2,
    operator_pb2,
    operator_pb2_grpc,
    tenant_pb2,
    tenant_pb2_grpc,
)
from tests.harness.control_plane import OPERATOR_TOKEN, ControlPlaneProcess
from tests.harness.etcd import EtcdServer
from tests.harness.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "control_plane.json"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- cp:begin -->", "<!-- cp:end -->"
OP_MD = (("authorization", f"Bearer {OPERATOR_TOKEN}"),)


def md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def scrape(url: str, pattern: str) -> float:
    """Sum of every sample whose metric line matches *pattern*."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    rx = re.compile(pattern)
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#") and rx.search(line)
    )


def scrape_by_op(url: str) -> dict[str, float]:
    """``bmaas_cp_etcd_round_trips_total`` of one replica, by its ``op`` label."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for m in re.finditer(r'^bmaas_cp_etcd_round_trips_total\{op="([^"]+)"\} (\S+)$', text, re.M):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def rss_peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid* (all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def gather_limited(n: int, coros: list[Any]) -> list[Any]:
    sem = asyncio.Semaphore(n)

    async def run(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(run(c) for c in coros))


async def setup(
    channel: grpc.aio.Channel, args: argparse.Namespace
) -> tuple[list[str], dict[str, str], float]:
    op = operator_pb2_grpc.OperatorServiceStub(channel)
    agent = agent_pb2_grpc.AgentServiceStub(channel)
    await op.CreateInstanceType(
        operator_pb2.CreateInstanceTypeRequest(
            instance_type=common_pb2.InstanceType(
                name="instanceTypes/bm-c64", host_class="c64", cpus=64, memory_gib=256
            )
        ),
        metadata=OP_MD,
    )
    await op.RegisterImage(
        operator_pb2.RegisterImageRequest(
            image=common_pb2.Image(name="images/debian-12", source_uri="file:///d12.raw")
        ),
        metadata=OP_MD,
    )
    tokens = []
    for i in range(args.tenants):
        t = await op.CreateTenant(
            operator_pb2.CreateTenantRequest(
                tenant=common_pb2.Tenant(
                    name=f"tenants/t{i}", quota=common_pb2.Quota(max_instances=10_000)
                )
            ),
            metadata=OP_MD,
        )
        tok = await op.IssueTenantToken(
            operator_pb2.IssueTenantTokenRequest(tenant=t.name), metadata=OP_MD
        )
        tokens.append(tok.token)

    async def enroll(i: int) -> tuple[str, str]:
        resp = await op.EnrollHost(
            operator_pb2.EnrollHostRequest(
                host=common_pb2.Host(
                    name=f"hosts/h{i:05d}",
                    zone=f"z{i % 3}",
                    rack=f"r{i // 40}",
                    host_class="c64",
                    hardware=common_pb2.HardwareProfile(cpus=64, memory_gib=256),
                )
            ),
            metadata=OP_MD,
        )
        await agent.Register(
            agent_pb2.RegisterRequest(host=resp.host.name), metadata=md(resp.agent_credential)
        )
        return resp.host.name, resp.agent_credential

    start = time.perf_counter()
    creds = dict(
        await gather_limited(args.enroll_concurrency, [enroll(i) for i in range(args.hosts)])
    )
    return tokens, creds, time.perf_counter() - start


async def heartbeat_fleet(
    channel: grpc.aio.Channel, creds: dict[str, str], stop: asyncio.Event
) -> int:
    """One Connect stream per sampled host; heartbeat every 2 s; drain desired state."""
    agent = agent_pb2_grpc.AgentServiceStub(channel)
    sent = 0

    async def one(host: str, cred: str) -> None:
        nonlocal sent
        call = agent.Connect(metadata=md(cred))

        async def drain() -> None:
            while await call.read() is not grpc.aio.EOF:
                pass

        reader = asyncio.create_task(drain())
        try:
            while not stop.is_set():
                await call.write(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(host=host)))
                sent += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
        finally:
            call.cancel()
            reader.cancel()

    await asyncio.gather(*(one(h, c) for h, c in creds.items()), return_exceptions=True)
    return sent


async def workload(
    channels: list[grpc.aio.Channel],
    tokens: list[str],
    *,
    seconds: float,
    workers: int,
    hold: int | None,
) -> dict[str, Any]:
    """Closed-loop CreateInstance clients; with *hold*, each also terminates
    its oldest instance once it holds more than *hold*."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    terminated = 0
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal terminated
        stub = tenant_pb2_grpc.TenantServiceStub(channels[w % len(channels)])
        meta = md(tokens[w % len(tokens)])
        held: list[str] = []
        while time.perf_counter() < deadline:
            req = tenant_pb2.CreateInstanceRequest(
                request_id=uuid.uuid4().hex,
                instance=common_pb2.Instance(
                    instance_type="instanceTypes/bm-c64", image="images/debian-12"
                ),
            )
            t0 = time.perf_counter()
            try:
                inst = await stub.CreateInstance(req, metadata=meta, timeout=10)
            except grpc.aio.AioRpcError as err:
                errors[err.code().name] = errors.get(err.code().name, 0) + 1
                await asyncio.sleep(0.01)
                continue
            latencies.append(time.perf_counter() - t0)
            held.append(inst.name)
            if hold is not None and len(held) > hold:
                try:
                    await stub.TerminateInstance(
                        tenant_pb2.InstanceActionRequest(name=held.pop(0)),
                        metadata=meta,
                        timeout=10,
                    )
                    terminated += 1
                except grpc.aio.AioRpcError as err:
                    key = f"terminate:{err.code().name}"
                    errors[key] = errors.get(key, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    elapsed = time.perf_counter() - start
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else 0.0

    return {
        "placements": len(lat),
        "terminations": terminated,
        "elapsed_s": round(elapsed, 2),
        "placements_per_s": round(len(lat) / elapsed, 1),
        "create_p50_ms": round(pct(0.50), 2),
        "create_p99_ms": round(pct(0.99), 2),
        "create_mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else 0.0,
        "errors": errors,
    }


async def burst_phase(
    etcd: EtcdServer, tokens: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """The API's placement path alone: one replica without controllers (so no
    instance lifecycle runs behind the creates), creates only, on the hosts
    still free after the churn phase."""
    mport = free_port()
    cp = ControlPlaneProcess(
        etcd, controllers=False, extra_args=("--metrics", f"127.0.0.1:{mport}")
    ).start()
    try:
        assert cp.proc is not None
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{cp.port}") for _ in range(2)]
        url = f"http://127.0.0.1:{mport}/metrics"
        rt0, cpu0 = scrape(url, r"^bmaas_cp_etcd_round_trips_total"), cpu_seconds(cp.proc.pid)
        res = await workload(
            channels, tokens, seconds=args.burst_seconds, workers=args.burst_workers, hold=None
        )
        rt1, cpu1 = scrape(url, r"^bmaas_cp_etcd_round_trips_total"), cpu_seconds(cp.proc.pid)
        for ch in channels:
            await ch.close()
        n = max(res["placements"], 1)
        res["workers"] = args.burst_workers
        res["cp_round_trips_per_placement"] = round((rt1 - rt0) / n, 2)
        res["cp_cpu_ms_per_placement"] = round((cpu1 - cpu0) * 1000 / n, 2)
        return res
    finally:
        cp.terminate()
        cp.close()


def render(res: dict[str, Any]) -> str:
    w = res["workload"]
    ok = w["placements_per_s"] >= 300 and w["create_p99_ms"] < 100
    return "\n".join(
        [
            f"Run {res['time']} on {res['cpus']} CPUs ({res['cpu_model']}), one etcd, "
            + (
                f"{res['replicas']} API replica(s) without controllers taking the clients' "
                "calls plus one replica running the leader-elected controllers"
                if res["separate_controllers"]
                else f"{res['replicas']} replica(s), each serving the API and electing one to "
                "run the controllers"
            )
            + "; load average "
            f"{res['loadavg_before']} before the run (other work shares the machine).  "
            f"{res['hosts']:,} simulated hosts enrolled and registered through gRPC in "
            f"{res['enroll_s']} s "
            f"({res['enroll_per_s']:,.0f} hosts/s); {res['heartbeat_sample']} of them heartbeat "
            f"over real AgentService.Connect streams, the rest are agentless (the controllers "
            f"simulate their agent).  {res['workers']} closed-loop clients over {res['tenants']} "
            f"tenants create instances and terminate their oldest beyond {res['hold']} held, "
            f"for {w['elapsed_s']} s.",
            "",
            "| metric | value |",
            "| --- | ---: |",
            f"| placements (successful CreateInstance) | {w['placements']:,} |",
            f"| placements/s | {w['placements_per_s']:,.1f} |",
            f"| CreateInstance p50 latency | {w['create_p50_ms']:.1f} ms |",
            f"| CreateInstance p99 latency | {w['create_p99_ms']:.1f} ms |",
            f"| terminations during the run | {w['terminations']:,} |",
            f"| etcd round trips per placement (control plane's count, API + controllers) | "
            f"{res['cp_round_trips_per_placement']:.1f} |",
            f"| etcd round trips per placement (etcd's grpc_server_handled_total) | "
            f"{res['etcd_round_trips_per_placement']:.1f} |",
            "| round trips per placement by replica"
            + (" (API; controllers)" if res["separate_controllers"] else "")
            + " and etcd call | "
            + "; ".join(
                ", ".join(f"{op} {n:.2f}" for op, n in ops.items())
                for ops in res.get("cp_round_trips_per_placement_by_replica", [])
            )
            + " |",
            "| control-plane RSS peak / after run, per replica"
            + (" (API, controllers)" if res["separate_controllers"] else "")
            + " | "
            + ", ".join(
                f"{p:.0f} / {n:.0f} MiB"
                for p, n in zip(res["cp_rss_peak_mib"], res["cp_rss_mib"], strict=True)
            )
            + " |",
            "| CPU per placement: control plane (all replicas) / etcd / bench client | "
            + " / ".join(f"{v:.1f} ms" for v in res["cpu_ms_per_placement"].values())
            + " |",
            "| control-plane CPU per placement, per replica"
            + (" (API, controllers)" if res["separate_controllers"] else "")
            + " | "
            + ", ".join(f"{v:.1f} ms" for v in res["cp_cpu_ms_per_placement_by_replica"])
            + " |",
            f"| errors | {json.dumps(w['errors']) if w['errors'] else 'none'} |",
            "",
            f"Targets: >= 300 placements/s and p99 < 100 ms: **{'met' if ok else 'missed'}** "
            "(churn phase).",
            *_render_burst(res.get("burst")),
        ]
    )


def _render_burst(b: dict[str, Any] | None) -> list[str]:
    if not b:
        return []
    ok = b["placements_per_s"] >= 300 and b["create_p99_ms"] < 100
    return [
        "",
        f"Placement path alone (a replica without controllers, {b['workers']} closed-loop "
        f"clients, creates only, {b['elapsed_s']} s): {b['placements']:,} placements, "
        f"**{b['placements_per_s']:,.1f}/s**, p50 {b['create_p50_ms']:.1f} ms, "
        f"p99 {b['create_p99_ms']:.1f} ms, {b['cp_round_trips_per_placement']:.1f} etcd round "
        f"trips and {b['cp_cpu_ms_per_placement']:.1f} ms control-plane CPU per placement, "
        f"errors: {json.dumps(b['errors']) if b['errors'] else 'none'}.  "
        f"Targets: **{'met' if ok else 'missed'}**.",
    ]


def write_doc(section: str) -> None:
    block = f"{BEGIN}\n{section}\n{END}"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = (
            text.rstrip("\n") + "\n\n## Control plane (bench/control_plane.py)\n\n" + block + "\n"
        )
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loadavg_before = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    with EtcdServer(name="bmaas-bench") as etcd:
        separate = args.separate_controllers
        metrics_ports = [free_port() for _ in range(args.replicas + int(separate))]
        replicas = [
            ControlPlaneProcess(
                etcd,
                lease_ttl=5,
                controllers=not separate or i == len(metrics_ports) - 1,
                extra_args=("--metrics", f"127.0.0.1:{port}"),
            )
            for i, port in enumerate(metrics_ports)
        ]
        api_replicas = replicas[: args.replicas]
        try:
            for cp in replicas:
                cp.start()
            pids = [cp.proc.pid for cp in replicas if cp.proc is not None]
            channels = [
                grpc.aio.insecure_channel(f"127.0.0.1:{cp.port}")
                for cp in api_replicas
                for _ in range(2)
            ]
            tokens, creds, enroll_s = await setup(channels[0], args)
            sample = dict(list(creds.items())[: args.heartbeat_sample])
            stop = asyncio.Event()
            fleet = asyncio.create_task(heartbeat_fleet(channels[-1], sample, stop))
            await asyncio.sleep(1.0)
            cp_urls = [f"http://127.0.0.1:{port}/metrics" for port in metrics_ports]
            etcd_url = f"{etcd.url}/metrics"
            etcd_pid = etcd._proc.pid if etcd._proc else 0

            def sample_counters() -> tuple[float, float, float, float, float]:
                return (
                    sum(scrape(u, r"^bmaas_cp_etcd_round_trips_total") for u in cp_urls),
                    scrape(etcd_url, r'^grpc_server_handled_total\{.*grpc_type="unary"'),
                    sum(cpu_seconds(pid) for pid in pids),
                    cpu_seconds(etcd_pid),
                    time.process_time(),
                )

            before = sample_counters()
            per_replica0 = [cpu_seconds(pid) for pid in pids]
            ops0 = [scrape_by_op(u) for u in cp_urls]
            result = await workload(
                channels, tokens, seconds=args.seconds, workers=args.workers, hold=args.hold
            )
            after = sample_counters()
            ops1 = [scrape_by_op(u) for u in cp_urls]
            by_op = [
                {
                    op: round((n - o0.get(op, 0.0)) / max(result["placements"], 1), 2)
                    for op, n in sorted(o1.items())
                    if n - o0.get(op, 0.0) > 0
                }
                for o0, o1 in zip(ops0, ops1, strict=True)
            ]
            per_replica = [
                round((cpu_seconds(pid) - c0) * 1000 / max(result["placements"], 1), 2)
                for pid, c0 in zip(pids, per_replica0, strict=True)
            ]
            stop.set()
            heartbeats = await fleet
            rss_now = [rss_mib(pid) for pid in pids]
            rss_peak = [rss_peak_mib(pid) for pid in pids]
            for ch in channels:
                await ch.close()
            for cp in replicas:
                cp.terminate()
            burst = await burst_phase(etcd, tokens, args) if args.burst_seconds > 0 else None
        finally:
            for cp in replicas:
                if cp.proc is not None:
                    cp.terminate()
                cp.close()
    placements = max(result["placements"], 1)
    delta = [(b - a) / placements for a, b in zip(before, after, strict=True)]
    return {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "replicas": args.replicas,
        "separate_controllers": args.separate_controllers,
        "loadavg_before": loadavg_before,
        "hosts": args.hosts,
        "tenants": args.tenants,
        "workers": args.workers,
        "hold": args.hold,
        "heartbeat_sample": args.heartbeat_sample,
        "heartbeats_sent": heartbeats,
        "enroll_s": round(enroll_s, 1),
        "enroll_per_s": round(args.hosts / enroll_s, 1),
        "workload": result,
        "burst": burst,
        "cp_round_trips_per_placement": round(delta[0], 2),
        "etcd_round_trips_per_placement": round(delta[1], 2),
        "cpu_ms_per_placement": {
            "control_plane": round(delta[2] * 1000, 2),
            "etcd": round(delta[3] * 1000, 2),
            "bench_client": round(delta[4] * 1000, 2),
        },
        "cp_cpu_ms_per_placement_by_replica": per_replica,
        "cp_round_trips_per_placement_by_replica": by_op,
        "cp_rss_mib": [round(r, 1) for r in rss_now],
        "cp_rss_peak_mib": [round(r, 1) for r in rss_peak],
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, default=1, help="API replicas clients use")
    parser.add_argument(
        "--separate-controllers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the controllers in one more replica that serves no clients",
    )
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--hold", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--heartbeat-sample", type=int, default=100)
    parser.add_argument("--burst-seconds", type=float, default=10.0, help="0 = skip")
    parser.add_argument("--burst-workers", type=int, default=16)
    parser.add_argument("--enroll-concurrency", type=int, default=128)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    res = asyncio.run(run(args))
    section = render(res)
    print(section)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=2) + "\n")
        write_doc(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
