"""Control-plane benchmark: placements through the real gRPC API, on real etcd,
with a real agent on every host.

Run ``python -m bench.control_plane`` (``make bench``).  What it does:

1. starts etcd (``tools/region/etcd.py``) and ``bmaas-control-plane``
   subprocesses with ``--metrics`` and a ``--config`` file setting the
   agents' heartbeat interval and TTL: by default one API replica that takes
   every client call and every agent stream (``--no-controllers``) plus one
   replica that runs the leader-elected controllers and serves nobody - the
   production shape (APIs active-active, controllers behind the lease)
   (``--no-separate-controllers``: every replica serves and elects;
   ``--replicas N``: N API replicas, agents spread over them);
2. creates an instance type, an image and ``--tenants`` tenants with tokens,
   and enrols ``--hosts`` hosts (EnrollHost) through gRPC;
3. starts the **agent fleet**: ``--agent-procs`` worker processes (this
   module with ``--agent-worker``), each running its share of real
   ``host_agent.agent.Agent`` objects on the ``fake`` power driver (no
   server, no data plane).  Every agent calls ``AgentService.Register``
   itself (ENROLLED -> CLEANING; AVAILABLE once it reported the wipe) and
   holds its own ``Connect`` stream:
   heartbeats every ``--heartbeat-interval`` seconds, desired state down,
   instance phases and wipe reports up.  The agents of one worker share one
   gRPC channel per endpoint (``host_agent.client.SharedChannels``); their
   state directories are on tmpfs.  Nothing is simulated: an instance is
   RUNNING because its agent reported it, a host leaves CLEANING because its
   agent reported the wipe;
4. idle phase (``--idle-seconds``): the fleet only heartbeats and resyncs -
   the standing cost of 10,000 connected agents, per process;
5. churn phase (``--seconds``): ``--workers`` closed-loop clients (spread
   round-robin over the tenants) each call CreateInstance with a fresh
   request_id; once a client holds more than ``--hold`` instances it waits
   until its oldest is RUNNING and terminates it, so every instance goes
   create -> RUNNING -> terminate, and its host goes back through CLEANING
   (the agent's wipe report) to AVAILABLE.  A watcher in the bench process
   (one etcd watch on instances, one on hosts, through ``control_plane.store``)
   timestamps when each instance becomes RUNNING and each terminated host
   AVAILABLE again.

Reported: placements/s (successful CreateInstance per second of the churn
phase); latency p50/p99 of (a) the CreateInstance RPC as the client sees it,
(b) create-to-RUNNING: from the CreateInstance call to the watch event that
shows the instance RUNNING (API placement, controllers, desired-state push,
the agent's reconcile and report, the controllers again), (c)
terminate-to-AVAILABLE: from the TerminateInstance call to the watch event
that shows the host AVAILABLE (teardown, cleaning, the agent's wipe
report); etcd round trips per placement; CPU per placement and per second
split by process (API replica(s), controllers replica, etcd, agent workers,
bench client) from ``/proc/PID/stat``; RSS of every process.  The load
average is recorded: the machine is shared, other work depresses the
numbers.  Writes ``bench/results/control_plane.json`` and the section
between ``<!-- cp:begin -->`` and ``<!-- cp:end -->`` of
``docs/benchmarks.md`` (the rest of the file is left alone); ``--render
FILE`` rewrites that section from a results file.  ``BENCH_PROFILE_DIR=DIR``
makes every agent worker dump a cProfile of itself into DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from bench.doc import write_section
from bmaas.v1 import common_pb2, operator_pb2, operator_pb2_grpc, tenant_pb2, tenant_pb2_grpc
from bmaas_tls import ClientTls, aio_channel
from control_plane.api.agent import DESIRED_RESYNC_SECONDS
from control_plane.domain.compute import Instance
from control_plane.domain.host import Host
from control_plane.domain.lifecycle import HostState, InstanceState
from control_plane.store import Store
from tools.region.control_plane import OPERATOR_TOKEN, ControlPlaneProcess
from tools.region.etcd import EtcdServer
from tools.region.pki import default_pki
from tools.region.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "control_plane.json"
DOC = ROOT / "docs" / "benchmarks.md"
OP_MD = (("authorization", f"Bearer {OPERATOR_TOKEN}"),)
T = TypeVar("T")


def say(text: str) -> None:
    """A progress line on stderr."""
    print(f"bench: {text}", file=sys.stderr, flush=True)


def md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


# -- /proc and /metrics ---------------------------------------------------------------------


def scrape(url: str, pattern: str) -> float:
    """Sum of every sample whose metric line matches *pattern*."""
    with urllib.request.urlopen(url, timeout=60) as resp:
        text = resp.read().decode()
    rx = re.compile(pattern)
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#") and rx.search(line)
    )


def scrape_by_op(url: str) -> dict[str, float]:
    """``bmaas_cp_etcd_round_trips_total`` of one replica, by its ``op`` label."""
    with urllib.request.urlopen(url, timeout=60) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for m in re.finditer(r'^bmaas_cp_etcd_round_trips_total\{op="([^"]+)"\} (\S+)$', text, re.M):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def rss_mib(pid: int) -> float:
    return _status_kib(pid, "VmRSS:") / 1024


def rss_peak_mib(pid: int) -> float:
    return _status_kib(pid, "VmHWM:") / 1024


def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid* (all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: Sequence[float], p: float) -> float:
    """The *p* quantile of *values* in ms (nearest rank)."""
    if not values:
        return 0.0
    s = sorted(values)
    return round(s[min(len(s) - 1, int(p * len(s)))] * 1000, 1)


async def gather_limited(n: int, coros: list[Any]) -> list[Any]:
    sem = asyncio.Semaphore(n)

    async def run(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(run(c) for c in coros))


# -- the agent fleet (worker processes) ---------------------------------------------------


async def agent_worker(spec_path: Path) -> None:
    """One worker process of the fleet: run the agents listed in *spec_path*
    until SIGTERM.  stdout protocol: ``ready {json}`` once every agent holds
    its stream, ``stats {json}`` after shutdown."""
    from host_agent import metrics as agent_metrics
    from host_agent.agent import Agent
    from host_agent.client import SharedChannels
    from host_agent.config import AgentConfig

    spec = json.loads(spec_path.read_text())  # noqa: ASYNC240 - before any agent runs
    base_rss = rss_mib(os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    channels = SharedChannels(ClientTls(ca=Path(spec["ca"])))
    state_root = Path(spec["state_root"])
    agents: list[Agent] = []
    for i, (host_id, cred) in enumerate(spec["hosts"]):
        eps = spec["endpoints"]
        agents.append(
            Agent(
                AgentConfig(
                    host_id=host_id,
                    endpoints=tuple(eps[i % len(eps) :] + eps[: i % len(eps)]),
                    credential=cred,
                    state_dir=state_root / host_id,
                    run_dir_=state_root / host_id / "run",
                    power_driver="fake",
                    resync=spec["resync"],
                    max_backoff=5.0,
                    tls=ClientTls(ca=Path(spec["ca"])),
                ),
                channels=channels,
            )
        )
    started = time.perf_counter()
    sem = asyncio.Semaphore(spec["start_concurrency"])

    async def start(agent: Agent) -> None:
        async with sem:
            await agent.start()
            await agent.link.connected.wait()

    starting: asyncio.Future[Any] = asyncio.gather(*(start(a) for a in agents))
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():  # the bench gave up before the fleet was up
        starting.cancel()
        for agent in agents:
            await agent.aclose()
        await channels.aclose()
        return
    # what is alive now lives as long as the fleet: keep it out of the
    # collector's walks (as control_plane.main does for its caches)
    gc.collect()
    gc.freeze()
    ready = {
        "agents": len(agents),
        "start_s": round(time.perf_counter() - started, 1),
        "base_rss_mib": round(base_rss, 1),
        "rss_mib": round(rss_mib(os.getpid()), 1),
    }
    print("ready " + json.dumps(ready), flush=True)
    await stop.wait()
    connected = sum(a.link.connected.is_set() for a in agents)
    for agent in agents:
        await agent.aclose()
    await channels.aclose()
    stats = {
        "connected_at_end": connected,
        "reconnects": agent_metrics.RECONNECTS._value.get(),
        "reconcile_errors": agent_metrics.RECONCILE_ERRORS._value.get(),
    }
    print("stats " + json.dumps(stats), flush=True)


class Fleet:
    """The agent worker processes, started and stopped by the bench."""

    def __init__(
        self,
        creds: dict[str, str],
        endpoints: list[str],
        *,
        procs: int,
        resync: float,
        workdir: Path,
    ) -> None:
        self.workdir = workdir
        hosts = [(name.split("/", 1)[1], cred) for name, cred in creds.items()]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.specs: list[Path] = []
        for w in range(procs):
            spec = workdir / f"worker-{w}.json"
            spec.write_text(
                json.dumps(
                    {
                        "endpoints": endpoints,
                        "hosts": hosts[w::procs],
                        "state_root": str(workdir / "agents"),
                        "resync": resync,
                        "start_concurrency": 16,
                        "ca": str(default_pki().ca),
                    }
                )
            )
            self.specs.append(spec)
        self.pids: list[int] = []
        self.ready: list[dict[str, Any]] = []
        self.stats: list[dict[str, Any]] = []

    async def start(self, timeout: float = 600.0) -> float:
        started = time.perf_counter()
        for spec in self.specs:
            self.procs.append(
                subprocess.Popen(  # noqa: ASYNC220 - returns at once
                    [sys.executable, "-m", "bench.control_plane", "--agent-worker", str(spec)],
                    stdout=subprocess.PIPE,
                    cwd=ROOT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            )
        self.pids = [p.pid for p in self.procs]
        self.ready = await asyncio.gather(
            *(asyncio.wait_for(self._line(p, "ready "), timeout) for p in self.procs)
        )
        return time.perf_counter() - started

    @staticmethod
    async def _line(proc: subprocess.Popen[bytes], prefix: str) -> dict[str, Any]:
        assert proc.stdout is not None
        while True:
            line = (await asyncio.to_thread(proc.stdout.readline)).decode()
            if not line:
                raise RuntimeError(f"agent worker {proc.pid} exited {proc.poll()}")
            if line.startswith(prefix):
                return dict(json.loads(line[len(prefix) :]))

    async def stop(self) -> None:
        procs, self.procs = self.procs, []
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        with contextlib.suppress(Exception):
            self.stats = await asyncio.gather(
                *(asyncio.wait_for(self._line(p, "stats "), 60) for p in procs)
            )
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()


# -- setup, observer, workload ------------------------------------------------------------


async def setup(
    channel: grpc.aio.Channel, args: argparse.Namespace
) -> tuple[list[str], dict[str, str], float]:
    op = operator_pb2_grpc.OperatorServiceStub(channel)
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
                    power_driver="fake",
                    hardware=common_pb2.HardwareProfile(cpus=64, memory_gib=256),
                )
            ),
            metadata=OP_MD,
        )
        return resp.host.name, resp.agent_credential

    start = time.perf_counter()
    creds = dict(
        await gather_limited(args.enroll_concurrency, [enroll(i) for i in range(args.hosts)])
    )
    return tokens, creds, time.perf_counter() - start


class Observer:
    """Timestamps, from etcd watches, when instances become RUNNING and hosts
    AVAILABLE; the clients wait on it (never by polling the API)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.running: dict[str, float] = {}
        self.available: dict[str, list[float]] = {}
        self.available_hosts: set[str] = set()
        self._waiters: dict[str, asyncio.Future[float]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        hosts, rev = await self.store.list_all(Host)
        self.available_hosts = {h.id for h in hosts if h.state == HostState.AVAILABLE}
        self._tasks = [
            asyncio.create_task(self._instances(rev + 1)),
            asyncio.create_task(self._hosts(rev + 1)),
        ]

    async def _instances(self, rev: int) -> None:
        async for ev in self.store.watch(Instance, start_revision=rev):
            running = ev.obj is not None and ev.obj.state == InstanceState.RUNNING
            if running and ev.name not in self.running:
                now = time.perf_counter()
                self.running[ev.name] = now
                fut = self._waiters.pop(ev.name, None)
                if fut is not None and not fut.done():
                    fut.set_result(now)

    async def _hosts(self, rev: int) -> None:
        async for ev in self.store.watch(Host, start_revision=rev):
            if ev.obj is None:
                continue
            if ev.obj.state == HostState.AVAILABLE:
                if ev.obj.id not in self.available_hosts:
                    self.available_hosts.add(ev.obj.id)
                    self.available.setdefault(ev.obj.id, []).append(time.perf_counter())
            else:
                self.available_hosts.discard(ev.obj.id)

    async def wait_running(self, name: str, timeout: float) -> float | None:
        seen = self.running.get(name)
        if seen is not None:
            return seen
        fut = self._waiters.setdefault(name, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return None

    async def wait_available(self, n: int, timeout: float) -> int:
        deadline = time.perf_counter() + timeout
        while len(self.available_hosts) < n and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        return len(self.available_hosts)

    def available_after(self, host: str, t: float) -> float | None:
        return next((a for a in self.available.get(host, ()) if a > t), None)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def workload(
    channels: list[grpc.aio.Channel],
    tokens: list[str],
    observer: Observer,
    *,
    seconds: float,
    workers: int,
    hold: int,
) -> dict[str, Any]:
    """Closed-loop clients: create; beyond *hold* held, wait until the oldest
    is RUNNING and terminate it."""
    create_lat: list[float] = []
    created: dict[str, float] = {}
    terminated: list[tuple[str, float]] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + seconds

    def error(key: str) -> None:
        errors[key] = errors.get(key, 0) + 1

    async def worker(w: int) -> None:
        stub = tenant_pb2_grpc.TenantServiceStub(channels[w % len(channels)])
        meta = md(tokens[w % len(tokens)])
        held: list[tuple[str, str]] = []
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
                error(err.code().name)
                await asyncio.sleep(0.01)
                continue
            create_lat.append(time.perf_counter() - t0)
            created[inst.name] = t0
            held.append((inst.name, inst.host.rsplit("/", 1)[-1]))
            if len(held) > hold:
                name, host = held.pop(0)
                if await observer.wait_running(name, 30.0) is None:
                    error("not_running_after_30s")
                t1 = time.perf_counter()
                try:
                    await stub.TerminateInstance(
                        tenant_pb2.InstanceActionRequest(name=name), metadata=meta, timeout=10
                    )
                    terminated.append((host, t1))
                except grpc.aio.AioRpcError as err:
                    error(f"terminate:{err.code().name}")

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    elapsed = time.perf_counter() - start
    # instances still held: give them a moment to reach RUNNING (not timed as churn)
    pending = [n for n in created if n not in observer.running]
    await asyncio.gather(*(observer.wait_running(n, 15.0) for n in pending))
    to_running = [observer.running[n] - t for n, t in created.items() if n in observer.running]
    await asyncio.sleep(5.0)  # the last cleanings
    to_available = [
        a - t for h, t in terminated if (a := observer.available_after(h, t)) is not None
    ]
    n = len(create_lat)
    return {
        "placements": n,
        "terminations": len(terminated),
        "elapsed_s": round(elapsed, 2),
        "placements_per_s": round(n / elapsed, 1),
        "create_rpc_p50_ms": pct(create_lat, 0.50),
        "create_rpc_p99_ms": pct(create_lat, 0.99),
        "create_to_running_p50_ms": pct(to_running, 0.50),
        "create_to_running_p99_ms": pct(to_running, 0.99),
        "create_to_running_max_ms": pct(to_running, 1.0),
        "never_running": n - len(to_running),
        "terminate_to_available_p50_ms": pct(to_available, 0.50),
        "terminate_to_available_p99_ms": pct(to_available, 0.99),
        "terminated_not_available": len(terminated) - len(to_available),
        "errors": errors,
    }


# -- the run --------------------------------------------------------------------------------


class Probe:
    """CPU seconds per process group and control-plane/etcd counters."""

    def __init__(self, groups: dict[str, list[int]], cp_urls: list[str], etcd_url: str) -> None:
        self.groups = groups
        self.cp_urls = cp_urls
        self.etcd_url = etcd_url

    def sample(self) -> dict[str, Any]:
        cpu = {g: sum(cpu_seconds(p) for p in pids) for g, pids in self.groups.items()}
        cpu["bench_client"] = time.process_time()
        return {
            "t": time.perf_counter(),
            "cpu": cpu,
            "cp_rt": [scrape_by_op(u) for u in self.cp_urls],
            "etcd_rt": scrape(self.etcd_url, r'^grpc_server_handled_total\{.*grpc_type="unary"'),
            "agent_msgs": sum(scrape(u, r"^bmaas_cp_agent_messages_total") for u in self.cp_urls),
            "pushes": sum(scrape(u, r"^bmaas_cp_desired_state_pushes_total") for u in self.cp_urls),
        }

    @staticmethod
    def delta(a: dict[str, Any], b: dict[str, Any], per: float) -> dict[str, Any]:
        """Differences b - a divided by *per* (placements or seconds)."""
        per = max(per, 1e-9)
        by_replica = [
            {op: round((n - o0.get(op, 0.0)) / per, 2) for op, n in sorted(o1.items())}
            for o0, o1 in zip(a["cp_rt"], b["cp_rt"], strict=True)
        ]
        return {
            "cpu_ms": {g: round((b["cpu"][g] - a["cpu"][g]) * 1000 / per, 2) for g in a["cpu"]},
            "cp_round_trips": round(sum(sum(r.values()) for r in by_replica), 2),
            "cp_round_trips_by_replica": [{k: v for k, v in r.items() if v} for r in by_replica],
            "etcd_round_trips": round((b["etcd_rt"] - a["etcd_rt"]) / per, 2),
            "agent_messages": round((b["agent_msgs"] - a["agent_msgs"]) / per, 2),
            "desired_state_pushes": round((b["pushes"] - a["pushes"]) / per, 2),
        }


async def interruptible(main: Coroutine[Any, Any, T]) -> T:
    """Run *main*; SIGTERM or SIGINT cancels it, so that every ``finally``
    on its way stops what it started (agent workers, control-plane
    replicas, etcd) before the process exits."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loadavg_before = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    workdir = Path(tempfile.mkdtemp(prefix="bmaas-cp-bench-", dir=args.state_dir))
    cfg = workdir / "control-plane.toml"
    cfg.write_text(
        f"heartbeat_interval = {args.heartbeat_interval}\nheartbeat_ttl = {args.heartbeat_ttl}\n"
    )
    fleet: Fleet | None = None
    try:
        with EtcdServer(name="bmaas-bench") as etcd:
            separate = args.separate_controllers
            metrics_ports = [free_port() for _ in range(args.replicas + int(separate))]
            replicas = [
                ControlPlaneProcess(
                    etcd,
                    lease_ttl=5,
                    controllers=not separate or i == len(metrics_ports) - 1,
                    allow_fake_power=True,
                    extra_args=("--metrics", f"127.0.0.1:{port}", "--config", str(cfg)),
                )
                for i, port in enumerate(metrics_ports)
            ]
            api_replicas = replicas[: args.replicas]
            store = await Store.connect(etcd.host, etcd.port)
            observer = Observer(store)
            try:
                for cp in replicas:
                    cp.start()
                channels = [
                    aio_channel(f"127.0.0.1:{cp.port}", cp.client_tls)
                    for cp in api_replicas
                    for _ in range(2)
                ]
                tokens, creds, enroll_s = await setup(channels[0], args)
                fleet = Fleet(
                    creds,
                    [f"127.0.0.1:{cp.port}" for cp in api_replicas],
                    procs=args.agent_procs,
                    resync=args.agent_resync,
                    workdir=workdir,
                )
                fleet_s = await fleet.start()
                await observer.start()
                available = await observer.wait_available(args.hosts, 120.0)
                await asyncio.sleep(args.heartbeat_interval)  # settle: first keepalives done
                groups: dict[str, list[int]] = {
                    "api": [cp.proc.pid for cp in api_replicas if cp.proc is not None],
                    "controllers": [
                        cp.proc.pid for cp in replicas[args.replicas :] if cp.proc is not None
                    ],
                    "etcd": [etcd._proc.pid] if etcd._proc else [],
                    "agents": fleet.pids,
                }
                probe = Probe(
                    groups,
                    [f"http://127.0.0.1:{p}/metrics" for p in metrics_ports],
                    f"{etcd.url}/metrics",
                )
                s0 = probe.sample()
                say(f"fleet of {args.hosts} agents up in {fleet_s:.1f} s; idle phase")
                await asyncio.sleep(args.idle_seconds)
                s1 = probe.sample()
                idle = Probe.delta(s0, s1, s1["t"] - s0["t"])
                say("churn phase")
                result = await workload(
                    channels,
                    tokens,
                    observer,
                    seconds=args.seconds,
                    workers=args.workers,
                    hold=args.hold,
                )
                s2 = probe.sample()
                churn = Probe.delta(s1, s2, max(result["placements"], 1))
                churn_per_s = Probe.delta(s1, s2, s2["t"] - s1["t"])
                rss = {g: [round(rss_mib(p), 1) for p in pids] for g, pids in groups.items()}
                rss_peak = {
                    g: [round(rss_peak_mib(p), 1) for p in pids] for g, pids in groups.items()
                }
                rss["bench_client"] = [round(rss_mib(os.getpid()), 1)]
                for ch in channels:
                    await ch.close()
                await fleet.stop()
            finally:
                await observer.aclose()
                await store.aclose()
                if fleet is not None:
                    await fleet.stop()
                for cp in replicas:
                    if cp.proc is not None:
                        cp.terminate()
                    cp.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    agents_per_proc = [r["agents"] for r in fleet.ready]
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
        "heartbeat_interval_s": args.heartbeat_interval,
        "heartbeat_ttl_s": args.heartbeat_ttl,
        "agent_resync_s": args.agent_resync,
        "agent_procs": args.agent_procs,
        "agents_per_proc": agents_per_proc,
        "enroll_s": round(enroll_s, 1),
        "fleet_start_s": round(fleet_s, 1),
        "hosts_available_before_churn": available,
        "fleet_ready": fleet.ready,
        "fleet_stats": fleet.stats,
        "idle_seconds": args.idle_seconds,
        "idle_per_second": idle,
        "workload": result,
        "churn_per_placement": churn,
        "churn_per_second": churn_per_s,
        "rss_mib": rss,
        "rss_peak_mib": rss_peak,
    }


# -- report ---------------------------------------------------------------------------------


def render(res: dict[str, Any]) -> str:
    w = res["workload"]
    c, i = res["churn_per_placement"], res["idle_per_second"]
    cpu, icpu = c["cpu_ms"], i["cpu_ms"]
    ready = res["fleet_ready"]
    agent_mib = sum(r["rss_mib"] - r["base_rss_mib"] for r in ready) / max(res["hosts"], 1)
    rss, peak = res["rss_mib"], res["rss_peak_mib"]

    def mib(group: str) -> str:
        return " + ".join(f"{p:.0f}" for p in peak.get(group, rss.get(group, []))) + " MiB"

    topo = (
        f"{res['replicas']} API replica(s) (no controllers) taking the clients' calls and "
        "every agent stream, plus one replica running the leader-elected controllers"
        if res["separate_controllers"]
        else f"{res['replicas']} replica(s), each serving the API and electing one to run "
        "the controllers"
    )
    return "\n".join(
        [
            f"Run {res['time']} on {res['cpus']} CPUs ({res['cpu_model']}), shared with other "
            f"work (load average {res['loadavg_before']} before the run): one etcd, {topo}.  "
            f"{res['hosts']:,} hosts enrolled through gRPC in {res['enroll_s']} s, each with a "
            f"**real agent** (`host_agent.agent.Agent`, fake power driver, no data plane): "
            f"{res['agent_procs']} worker processes of {ready[0]['agents']:,} agents, one "
            f"shared gRPC channel per worker, every agent its own Register and Connect stream; "
            f"the fleet registered and connected in {res['fleet_start_s']} s.  Agents heartbeat "
            f"every {res['heartbeat_interval_s']} s (lease TTL {res['heartbeat_ttl_s']} s) and "
            f"resync every {res['agent_resync_s']} s.  {res['workers']} closed-loop clients "
            f"over {res['tenants']} tenants create instances; beyond {res['hold']} held, each "
            "waits for its oldest to be RUNNING (reported by its agent) and terminates it; the "
            "host comes back AVAILABLE after its agent reports the wipe.  Churn for "
            f"{w['elapsed_s']} s.  Numbers are noisy: {res['cpus']} shared cores run etcd, the "
            f"control plane, {res['hosts']:,} agents, the clients and other engineers' tests.",
            "",
            "| metric | value |",
            "| --- | ---: |",
            f"| placements (successful CreateInstance) | {w['placements']:,} |",
            f"| **placements/s** | **{w['placements_per_s']:,.1f}** |",
            f"| CreateInstance RPC latency p50 / p99 | {w['create_rpc_p50_ms']:.1f} / "
            f"{w['create_rpc_p99_ms']:.1f} ms |",
            f"| create-to-RUNNING p50 / p99 (CreateInstance call to the RUNNING watch event; "
            f"includes the agent round trip) | {w['create_to_running_p50_ms']:.0f} / "
            f"{w['create_to_running_p99_ms']:.0f} ms |",
            f"| terminate-to-AVAILABLE p50 / p99 (TerminateInstance call to the host's "
            f"AVAILABLE event: teardown, wipe report) | {w['terminate_to_available_p50_ms']:.0f}"
            f" / {w['terminate_to_available_p99_ms']:.0f} ms |",
            f"| terminations / instances never RUNNING / hosts not AVAILABLE again | "
            f"{w['terminations']:,} / {w['never_running']} / {w['terminated_not_available']} |",
            "| CPU per placement: API / controllers / etcd / agents / bench client | "
            + " / ".join(
                f"{cpu[g]:.1f}" for g in ("api", "controllers", "etcd", "agents", "bench_client")
            )
            + f" ms (total {sum(cpu.values()):.1f} ms) |",
            "| of which the standing fleet load (idle CPU/s over placements/s): API / "
            "controllers / etcd / agents | "
            + " / ".join(
                f"{icpu[g] / max(w['placements_per_s'], 1e-9):.1f}"
                for g in ("api", "controllers", "etcd", "agents")
            )
            + " ms |",
            f"| etcd round trips per placement (control plane's count; etcd's) | "
            f"{c['cp_round_trips']:.1f}; {c['etcd_round_trips']:.1f} |",
            "| round trips per placement by replica (API; controllers) and call | "
            + "; ".join(
                ", ".join(f"{op} {n:.2f}" for op, n in ops.items())
                for ops in c["cp_round_trips_by_replica"]
            )
            + " |",
            f"| agent messages / desired-state pushes per placement (incl. heartbeats) | "
            f"{c['agent_messages']:.1f} / {c['desired_state_pushes']:.1f} |",
            f"| idle fleet ({res['idle_seconds']:.0f} s, heartbeats and resyncs only): agent "
            f"messages/s, etcd round trips/s | {i['agent_messages']:,.0f}, "
            f"{i['cp_round_trips']:,.0f} |",
            "| idle fleet CPU, ms per second: API / controllers / etcd / agents / bench | "
            + " / ".join(
                f"{icpu[g]:.0f}" for g in ("api", "controllers", "etcd", "agents", "bench_client")
            )
            + " |",
            f"| RSS peak: API / controllers / etcd / agent workers | {mib('api')} / "
            f"{mib('controllers')} / {mib('etcd')} / {mib('agents')} |",
            f"| agent memory (worker RSS after start minus before, per agent) | "
            f"{agent_mib * 1024:.0f} KiB |",
            f"| idle fleet: API CPU per second per 1,000 hosts; etcd round trips/s per 1,000 "
            f"hosts | {icpu['api'] * 1000 / max(res['hosts'], 1):.1f} ms; "
            f"{i['cp_round_trips'] * 1000 / max(res['hosts'], 1):.1f} |",
            f"| control-plane CPU per placement (API + controllers) over etcd's | "
            f"{(cpu['api'] + cpu['controllers']) / max(cpu['etcd'], 1e-9):.2f}x |",
            f"| errors | {json.dumps(w['errors']) if w['errors'] else 'none'} |",
            "",
            "",
            "Where the time goes: each placement brings about "
            f"{c['agent_messages'] - i['agent_messages'] / max(w['placements_per_s'], 1e-9):.0f} "
            f"agent messages (instance phases, wipe report) and "
            f"{c['desired_state_pushes']:.0f} desired-state pushes.  An agent's heartbeat costs "
            "no etcd round trip (one lease per replica, kept by one LeaseKeepAlive stream: "
            'docs/architecture.md, "Liveness"); the idle fleet\'s etcd traffic is that '
            f"keepalive plus {res['hosts'] / DESIRED_RESYNC_SECONDS:,.0f} desired-state "
            f"recomputations/s (every Connect stream re-reads its host every "
            f"{DESIRED_RESYNC_SECONDS:.0f} s, jittered; the agent hub wakes streams on changes "
            "in between).",
        ]
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
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
    parser.add_argument("--idle-seconds", type=float, default=15.0)
    # the agents' own defaults (host_agent's --heartbeat-interval / --heartbeat-ttl)
    parser.add_argument("--heartbeat-interval", type=int, default=5)
    parser.add_argument("--heartbeat-ttl", type=int, default=15)
    parser.add_argument("--agent-procs", type=int, default=4)
    parser.add_argument("--agent-resync", type=float, default=10.0)
    parser.add_argument("--enroll-concurrency", type=int, default=128)
    parser.add_argument("--state-dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--render", type=Path, help="only rewrite the doc from a results JSON")
    parser.add_argument("--agent-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.agent_worker is not None:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        prof_dir = os.environ.get("BENCH_PROFILE_DIR")
        if prof_dir:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
            asyncio.run(agent_worker(args.agent_worker))
            prof.disable()
            prof.dump_stats(f"{prof_dir}/worker-{os.getpid()}.prof")
            return 0
        asyncio.run(agent_worker(args.agent_worker))
        return 0
    if args.render is not None:  # the doc section again, from a results file
        res = json.loads(args.render.read_text())
    else:
        try:
            res = asyncio.run(interruptible(run(args)))
        except asyncio.CancelledError:
            print("interrupted: every process the benchmark started is stopped", file=sys.stderr)
            return 130
        if not args.no_write:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    section = render(res)
    print(section)
    if not args.no_write:
        write_section("cp", "Control plane (bench/control_plane.py)", section, doc=DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
