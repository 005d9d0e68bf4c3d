"""Block benchmark: offload-blk vs qemu-storage-daemon through the same driver.

Run ``python -m bench.blk`` (``make bench``).  For each back-end it creates
one image in tmpfs (``/dev/shm``, filled with random bytes so reads hit real
pages), starts the daemon with two queues and connects one
:class:`offload.testing.VhostUserBlkFrontend`; both daemons stay up and the
cases alternate between them (fairer on a shared machine).  The cases:
4 KiB random read and random write, queue depth 1 and 32 *per queue*, on 1
and 2 queues.  A case is a closed loop in one thread: fill every queue to its
depth, kick once per queue, then repeatedly wait for completions (one call
eventfd per queue, ``offload.testing.wait_any`` polls them together), stamp
their latency, resubmit as many, kick once per touched queue.  The first
``--warmup`` seconds are not counted.  Measured: IOPS, p50/p99 latency
(submit to harvest, as the driver sees it), and CPU per I/O of the back-end
process (utime+stime of all its threads from ``/proc/PID/stat``) and of the
front-end (``os.times``).  The front-end is Python, so it preallocates one
4 KiB buffer per slot, copies nothing, and batches kicks and completions.

File volumes run four back-ends (``VARIANTS``): ``offload-blk`` (the
non-blocking file engine, event-driven: the one held to the targets),
``offload-blk-sync`` (``--engine sync``: the ring's thread blocks in every
request), ``offload-blk-poll`` (``--poll-us 50``) and ``qsd``.  The whole
set of cases is repeated ``--runs`` times (3), alternating back-ends within
each run, and the table gives the median of each number; the load average
at the start and end of the run is recorded, since the machine is shared.
Then the noisy-neighbour case (``noisy_neighbour``): one volume's QD1 random
reads alone and beside a second ``offload-blk`` limited with ``--max-iops``
whose own driver process pushes QD32 writes at it, alternating ``--runs``
times; target: p99 beside within 1.2x of p99 alone.

``--rbd`` runs the same cases on Ceph RBD instead: it starts a single-node
Ceph (``tools.region.ceph``, its OSD on a file in ``--tmpdir``), creates one
image per back-end and fills it with random bytes (a never-written RBD object
reads as zeros without touching the OSD's store), and compares
``offload-blk --rbd`` (librbd, asynchronous) with ``qemu-storage-daemon``'s
``rbd`` driver (``cache.direct=on``: no librbd cache, as the card's engine),
both clients of the same cluster in the same run.  Its results go to
``bench/results/blk_rbd.json`` and the ``blk-rbd`` section of
``docs/benchmarks.md`` (``bench.doc.write_section``); targets there are the
issue's: IOPS >= 1.0x qsd's at QD32, CPU per I/O <= 1.5x.

Results go to ``bench/results/blk.json`` and, as a table, between the
``<!-- blk:begin -->``/``<!-- blk:end -->`` markers of
``docs/benchmarks.md`` (other sections are left alone); the table is also
printed.  A back-end that fails to start is recorded and makes the exit
status 1; the other back-end still runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.doc import write_section
from offload.testing import BlkQueue, FrontendError, VhostUserBlkFrontend, wait_any
from tools.region.blk_backends import (
    RBD_BACKEND_KINDS,
    BackendKind,
    BackendStartError,
    BlkBackend,
    qemu_version,
)
from tools.region.ceph import CephCluster

BLOCK = 4096
QUEUE_DEPTHS = (1, 32)
QUEUE_COUNTS = (1, 2)
OPS = ("randread", "randwrite")
REPO = Path(__file__).resolve().parent.parent
#: (ours, reference) -> (max CPU per I/O ratio, min IOPS ratio at QD32)
PAIRS: dict[tuple[str, str], tuple[float, float]] = {
    ("offload-blk", "qsd"): (1.3, 1.0),
    ("offload-blk-rbd", "qsd-rbd"): (1.5, 1.0),
}
#: min IOPS ratio at QD1 on two queues (file volumes)
QD1_TWO_QUEUES_IOPS_MIN = 0.9
#: what is benchmarked under each name: the daemon kind and extra offload-blk flags
VARIANTS: dict[str, tuple[BackendKind, tuple[str, ...]]] = {
    "offload-blk": ("offload-blk", ()),  # the non-blocking engine, event-driven
    "offload-blk-sync": ("offload-blk", ("--engine", "sync")),  # one blocking thread per ring
    "offload-blk-poll": ("offload-blk", ("--poll-us", "50")),  # polling mode
    "qsd": ("qsd", ()),
    "offload-blk-rbd": ("offload-blk-rbd", ()),
    "qsd-rbd": ("qsd-rbd", ()),
}
FILE_VARIANTS = ("offload-blk", "offload-blk-sync", "offload-blk-poll", "qsd")
#: the noisy neighbour's IOPS limit (its driver runs QD32 against it)
NOISY_LIMIT_IOPS = 500


@dataclass
class CaseResult:
    backend: str
    op: str
    qd: int  # per queue
    queues: int
    ios: int
    seconds: float
    iops: float
    p50_us: float
    p99_us: float
    backend_cpu_us_per_io: float
    frontend_cpu_us_per_io: float
    errors: int


def _percentile(sorted_ns: list[int], pct: float) -> float:
    if not sorted_ns:
        return float("nan")
    i = min(len(sorted_ns) - 1, max(0, round(pct / 100 * len(sorted_ns)) - 1))
    return sorted_ns[i] / 1000.0


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def run_case(
    fe: VhostUserBlkFrontend,
    backend: BlkBackend,
    *,
    label: str | None = None,
    op: str,
    qd: int,
    nqueues: int,
    seconds: float,
    warmup: float,
    nblocks: int,
    seed: int,
) -> CaseResult:
    """One closed-loop case; the queues are idle before and after."""
    write = op == "randwrite"
    queues: list[BlkQueue] = fe.queues[:nqueues]
    rng = random.Random(seed)
    sectors = [rng.randrange(nblocks) * (BLOCK // 512) for _ in range(1 << 16)]
    nsec = len(sectors) - 1
    pos = 0
    perf = time.perf_counter_ns
    stamp = [[0] * q.depth for q in queues]
    lat: list[int] = []
    errors = 0
    for qi, q in enumerate(queues):
        for _ in range(qd):
            slot = q.submit_io(write, sectors[pos], BLOCK)
            pos = (pos + 1) & nsec
            stamp[qi][slot] = perf()
        q.kick()
    single = queues[0] if nqueues == 1 else None
    t_start = perf()
    measure_at = t_start + int(warmup * 1e9)
    end_at = measure_at + int(seconds * 1e9)
    measuring = False
    ios = 0
    cpu_be0 = cpu_fe0 = 0.0
    t0 = 0
    while True:
        if single is not None:
            done = [(single, slot, st) for slot, st in single.wait()]
        else:
            done = wait_any(queues, fe.timeout)
        now = perf()
        if not measuring and now >= measure_at:
            measuring = True
            cpu_be0, cpu_fe0, t0 = backend.cpu_seconds(), _self_cpu(), now
            lat.clear()
            ios = errors = 0
        if measuring and now >= end_at:
            cpu_be1, cpu_fe1, t1 = backend.cpu_seconds(), _self_cpu(), now
            break
        # Stamps first: reap() already freed these slots, and resubmitting
        # may hand one of them out again before its latency was read.
        for q, slot, status in done:
            lat.append(now - stamp[q.index][slot])
            if status:
                errors += 1
        touched: set[int] = set()
        for q, _slot, _status in done:
            qi = q.index
            new = q.submit_io(write, sectors[pos], BLOCK)
            pos = (pos + 1) & nsec
            stamp[qi][new] = now
            touched.add(qi)
        ios += len(done)
        for qi in touched:
            queues[qi].kick()
    # Drain without resubmitting.
    while any(q.vq.in_flight for q in queues):
        wait_any(queues, fe.timeout)
    elapsed = (t1 - t0) / 1e9
    lat.sort()
    return CaseResult(
        backend=label or backend.kind,
        op=op,
        qd=qd,
        queues=nqueues,
        ios=ios,
        seconds=round(elapsed, 3),
        iops=round(ios / elapsed, 1),
        p50_us=round(_percentile(lat, 50), 1),
        p99_us=round(_percentile(lat, 99), 1),
        backend_cpu_us_per_io=round((cpu_be1 - cpu_be0) * 1e6 / max(ios, 1), 2),
        frontend_cpu_us_per_io=round((cpu_fe1 - cpu_fe0) * 1e6 / max(ios, 1), 2),
        errors=errors,
    )


def _noisy_driver(socket: str, seconds: float, nblocks: int, ready: Any, iops: Any) -> None:
    """The noisy neighbour (its own process, so its driver has its own GIL): 4 KiB
    random writes at QD32 on two queues for *seconds*; its IOPS go to *iops*."""
    with VhostUserBlkFrontend(Path(socket), num_queues=2, depth=32, max_io=BLOCK) as fe:
        rng = random.Random(7)
        queues = fe.queues[:2]
        for q in queues:
            for _ in range(32):
                q.submit_io(True, rng.randrange(nblocks) * (BLOCK // 512), BLOCK)
            q.kick()
        ready.set()
        done = 0
        started = time.monotonic()
        end = started + seconds
        while time.monotonic() < end:
            completed = wait_any(queues, fe.timeout)
            done += len(completed)
            for q, _slot, _status in completed:
                q.submit_io(True, rng.randrange(nblocks) * (BLOCK // 512), BLOCK)
            for q in {q for q, _, _ in completed}:
                q.kick()
        iops.value = done / (time.monotonic() - started)
        while any(q.vq.in_flight for q in queues):
            wait_any(queues, fe.timeout)


def noisy_neighbour(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """p99 of a QD1 random-read volume alone, and beside a throttled noisy volume.

    Both volumes are ``offload-blk`` processes on this machine (one per volume,
    as the agent runs them); the noisy one has ``--max-iops NOISY_LIMIT_IOPS``
    and its own driver process pushes QD32 writes at it.  The two situations
    alternate ``--runs`` times; the medians are compared.
    """
    mib = 64
    nblocks = mib * (1 << 20) // BLOCK
    victim_img = make_image(workdir, mib, name="victim")
    noisy_img = make_image(workdir, mib, name="noisy")
    victim = _Session("offload-blk", victim_img, workdir)
    noisy = BlkBackend(
        "offload-blk",
        noisy_img,
        queues=2,
        tmp_root=str(workdir),
        extra_args=("--max-iops", str(NOISY_LIMIT_IOPS)),
    ).start()
    ctx = multiprocessing.get_context("spawn")
    alone: list[CaseResult] = []
    beside: list[CaseResult] = []
    noisy_iops: list[float] = []
    try:
        for run in range(args.runs):

            def case(label: str, run: int = run) -> CaseResult:
                return run_case(
                    victim.fe, victim.backend, label=label, op="randread", qd=1, nqueues=1,
                    seconds=args.seconds, warmup=args.warmup, nblocks=nblocks, seed=run,
                )  # fmt: skip

            alone.append(case("victim alone"))
            print(_row(alone[-1]), flush=True)
            ready, rate = ctx.Event(), ctx.Value("d", 0.0)
            driver = ctx.Process(
                target=_noisy_driver,
                args=(str(noisy.socket_path), args.seconds + args.warmup + 2, nblocks, ready, rate),
            )
            driver.start()
            try:
                if not ready.wait(60):
                    raise FrontendError("the noisy neighbour's driver did not start")
                beside.append(case("victim beside noisy"))
                print(_row(beside[-1]), flush=True)
            finally:
                driver.join(120)
            noisy_iops.append(rate.value)
    finally:
        victim.close(clean=True)
        noisy.stop()
        victim_img.unlink(missing_ok=True)
        noisy_img.unlink(missing_ok=True)
    p99_alone = statistics.median(r.p99_us for r in alone)
    p99_beside = statistics.median(r.p99_us for r in beside)
    return {
        "noisy_limit_iops": NOISY_LIMIT_IOPS,
        "noisy_iops": round(statistics.median(noisy_iops), 1),
        "p99_alone_us": p99_alone,
        "p99_beside_us": p99_beside,
        "p50_alone_us": statistics.median(r.p50_us for r in alone),
        "p50_beside_us": statistics.median(r.p50_us for r in beside),
        "p99_ratio": round(p99_beside / p99_alone, 3),
        "target": 1.2,
        "runs": [asdict(r) for r in alone + beside],
    }


def make_image(directory: Path, mib: int, *, name: str = "bench") -> Path:
    """An image of random bytes (so reads hit real tmpfs pages, not holes)."""
    path = directory / f"{name}.img"
    chunk = os.urandom(1 << 20)
    with path.open("wb") as f:
        for _ in range(mib):
            f.write(chunk)
    return path


def make_rbd_image(ceph: CephCluster, mib: int, *, name: str) -> Path:
    """An RBD image of random bytes; returns ``POOL/IMAGE`` (as a path, like a file's)."""
    ceph.create_image(name, mib << 20)
    chunk = os.urandom(4 << 20)
    for off in range(0, mib << 20, len(chunk)):
        ceph.write_image(name, off, chunk[: (mib << 20) - off])
    return Path(f"{ceph.pool}/{name}")


class _Session:
    """One daemon plus one connected two-queue front-end."""

    def __init__(
        self,
        label: str,
        image: Path,
        workdir: Path,
        ceph_conf: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        kind, flags = VARIANTS[label]
        self.backend = BlkBackend(
            kind,
            image,
            queues=2,
            tmp_root=str(workdir),
            ceph_conf=ceph_conf,
            extra_args=(*flags, *extra),
        ).start()
        try:
            self.fe = VhostUserBlkFrontend(
                self.backend.socket_path, num_queues=2, depth=max(QUEUE_DEPTHS), max_io=BLOCK
            )
        except BaseException:
            self.backend.stop()
            raise

    def close(self, *, clean: bool) -> None:
        try:
            self.fe.close(stop_rings=clean)
        finally:
            self.backend.stop()


class _Bench:
    """Both back-ends side by side, each with its own image; cases alternate between them.

    Alternating per case (rather than one back-end after the other) keeps the
    comparison fair on a shared, noisy machine; an idle daemon costs nothing.
    A case that fails (device error, timeout, crash) is recorded in
    ``failures``; that back-end's daemon and connection are then replaced so
    the remaining cases still run.  A back-end that cannot start is dropped.
    """

    def __init__(
        self,
        kinds: list[str],
        args: argparse.Namespace,
        workdir: Path,
        ceph: CephCluster | None = None,
    ) -> None:
        self.kinds = list(kinds)
        self.args = args
        self.workdir = workdir
        self.ceph = ceph
        self.nblocks = args.image_mib * (1 << 20) // BLOCK
        if ceph is not None:
            self.images = {k: make_rbd_image(ceph, args.image_mib, name=k) for k in kinds}
        else:
            self.images = {k: make_image(workdir, args.image_mib, name=k) for k in kinds}
        self.sessions: dict[str, _Session] = {}
        self.failures: dict[str, str] = {}
        self.results: list[CaseResult] = []

    def _session(self, kind: str) -> _Session | None:
        if kind not in self.sessions:
            try:
                conf = None if self.ceph is None else self.ceph.conf_path
                self.sessions[kind] = _Session(kind, self.images[kind], self.workdir, conf)
            except (BackendStartError, FrontendError, OSError) as exc:
                self.failures[kind] = f"{type(exc).__name__}: {exc}"
                print(f"| {kind}: FAILED to start: {self.failures[kind]} |", flush=True)
                self.kinds.remove(kind)
                return None
        return self.sessions[kind]

    def run(self) -> None:
        for op in OPS:
            for nq in QUEUE_COUNTS:
                for qd in QUEUE_DEPTHS:
                    for kind in list(self.kinds):
                        self._case(kind, op=op, qd=qd, nq=nq)

    def _case(self, kind: str, *, op: str, qd: int, nq: int) -> None:
        session = self._session(kind)
        if session is None:
            return
        try:
            res = run_case(
                session.fe,
                session.backend,
                label=kind,
                op=op,
                qd=qd,
                nqueues=nq,
                seconds=self.args.seconds,
                warmup=self.args.warmup,
                nblocks=self.nblocks,
                seed=qd * 10 + nq,
            )
        except (FrontendError, OSError) as exc:
            name = f"{kind} {op} qd={qd} queues={nq}"
            self.failures[name] = f"{type(exc).__name__}: {exc}"
            print(f"| {name}: FAILED: {self.failures[name]} |", flush=True)
            del self.sessions[kind]
            session.close(clean=False)
            return
        print(_row(res), flush=True)
        self.results.append(res)

    def close(self) -> None:
        for kind, session in self.sessions.items():
            if not session.backend.alive():
                self.failures[kind] = f"{kind} died: {session.backend.log_tail()}"
            session.close(clean=True)
        self.sessions.clear()
        for image in self.images.values():
            if self.ceph is None:
                image.unlink(missing_ok=True)


# --------------------------------------------------------------------------- reporting

_HEADER = (
    "| back-end | workload | QD/queue | queues | IOPS | p50 µs | p99 µs "
    "| back-end CPU µs/IO | front-end CPU µs/IO | errors |\n"
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def _row(r: CaseResult) -> str:
    return (
        f"| {r.backend} | {r.op} 4k | {r.qd} | {r.queues} | {r.iops:,.0f} | {r.p50_us:.1f} "
        f"| {r.p99_us:.1f} | {r.backend_cpu_us_per_io:.2f} | {r.frontend_cpu_us_per_io:.2f} "
        f"| {r.errors} |"
    )


def medians(results: list[CaseResult]) -> list[CaseResult]:
    """One row per (back-end, case): the median of each number over the runs."""
    groups: dict[tuple[str, str, int, int], list[CaseResult]] = {}
    for r in results:
        groups.setdefault((r.backend, r.op, r.qd, r.queues), []).append(r)
    out: list[CaseResult] = []
    for (backend, op, qd, nq), rs in groups.items():
        out.append(
            CaseResult(
                backend=backend,
                op=op,
                qd=qd,
                queues=nq,
                ios=sum(r.ios for r in rs),
                seconds=round(sum(r.seconds for r in rs), 3),
                iops=statistics.median(r.iops for r in rs),
                p50_us=statistics.median(r.p50_us for r in rs),
                p99_us=statistics.median(r.p99_us for r in rs),
                backend_cpu_us_per_io=statistics.median(r.backend_cpu_us_per_io for r in rs),
                frontend_cpu_us_per_io=statistics.median(r.frontend_cpu_us_per_io for r in rs),
                errors=sum(r.errors for r in rs),
            )
        )
    out.sort(key=lambda r: (OPS.index(r.op), r.queues, r.qd, r.backend))
    return out


def compare(results: list[CaseResult]) -> list[dict[str, Any]]:
    """offload-blk against qsd per case (file, or RBD), with the two targets of ``PAIRS``."""
    by = {(r.backend, r.op, r.qd, r.queues): r for r in results}
    out: list[dict[str, Any]] = []
    for (mine, theirs), (cpu_max, iops_min) in PAIRS.items():
        out += _compare_pair(by, mine, theirs, cpu_max, iops_min)
    return out


def _compare_pair(
    by: dict[tuple[str, str, int, int], CaseResult],
    mine: str,
    theirs: str,
    cpu_max: float,
    iops_min: float,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for op in OPS:
        for nq in QUEUE_COUNTS:
            for qd in QUEUE_DEPTHS:
                ours, ref = by.get((mine, op, qd, nq)), by.get((theirs, op, qd, nq))
                if ours is None or ref is None or not ref.iops or not ref.backend_cpu_us_per_io:
                    continue
                iops_ratio = ours.iops / ref.iops
                cpu_ratio = ours.backend_cpu_us_per_io / ref.backend_cpu_us_per_io
                out.append(
                    {
                        "op": op,
                        "qd": qd,
                        "queues": nq,
                        "iops_ratio": round(iops_ratio, 3),
                        "cpu_per_io_ratio": round(cpu_ratio, 3),
                        "cpu_target_met": cpu_ratio <= cpu_max,
                        "iops_target_met": _iops_target_met(mine, qd, nq, iops_ratio, iops_min),
                        "cpu_target": cpu_max,
                        "iops_target": iops_min,
                    }
                )
    return out


def _iops_target_met(mine: str, qd: int, nq: int, ratio: float, qd32_min: float) -> bool | None:
    if qd == 32:
        return ratio >= qd32_min
    if mine == "offload-blk" and qd == 1 and nq == 2:
        return ratio >= QD1_TWO_QUEUES_IOPS_MIN
    return None


def render_markdown(report: dict[str, Any], results: list[CaseResult]) -> str:
    m = report["machine"]
    lines = [
        f"Run {report['timestamp']} on {m['nproc']} CPUs ({m['cpu']}), kernel {m['kernel']}, "
        f"{m['qemu']}; {report['params']['seconds']} s per case after "
        f"{report['params']['warmup']} s warm-up, {report['params']['image_mib']} MiB image "
        f"{'in an RBD pool on a single-node Ceph' if report.get('rbd') else 'in tmpfs'}; "
        f"median of {report['params'].get('runs', 1)} alternating runs.  The machine is "
        f"shared and was loaded (load average {report.get('loadavg_start', '?')} at the start, "
        f"{m.get('loadavg', '?')} at the end), so ratios matter more than absolute numbers."
        "  QD is per queue; latency is submit-to-harvest in the Python driver "
        "(`offload.testing`); CPU is utime+stime of the whole back-end process.",
        "",
        _HEADER,
        *(_row(r) for r in results),
    ]
    if report["comparison"]:
        first = report["comparison"][0]
        lines += [
            "",
            f"Targets: back-end CPU per I/O <= {first['cpu_target']}x qsd's (event mode); "
            f"IOPS >= {first['iops_target']}x qsd's at QD32"
            + (
                ""
                if report.get("rbd")
                else f" and >= {QD1_TWO_QUEUES_IOPS_MIN}x at QD1 on two queues"
            )
            + ".  Rows are medians over the runs; `offload-blk-sync` (one blocking thread "
            "per ring, the previous engine) and `offload-blk-poll` (`--poll-us 50`) are shown "
            "for comparison, only `offload-blk` (event-driven) is held to the targets.",
            "",
            "| workload | QD/queue | queues | IOPS offload/qsd | CPU/IO offload/qsd | targets |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for c in report["comparison"]:
            ok = c["cpu_target_met"] and c["iops_target_met"] is not False
            lines.append(
                f"| {c['op']} 4k | {c['qd']} | {c['queues']} | {c['iops_ratio']:.2f} "
                f"| {c['cpu_per_io_ratio']:.2f} | {'met' if ok else 'missed'} |"
            )
    noisy = report.get("noisy_neighbour")
    if noisy:
        met = "met" if noisy["p99_ratio"] <= noisy["target"] else "missed"
        lines += [
            "",
            f"Noisy neighbour: a volume's QD1 4 KiB random reads alone, then beside another "
            f"`offload-blk` volume limited to {noisy['noisy_limit_iops']} IOPS "
            f"(`--max-iops`) whose own driver process pushes QD32 random writes at it "
            f"(it got {noisy['noisy_iops']:,.0f} IOPS).",
            "",
            "| victim | p50 µs | p99 µs |",
            "| --- | ---: | ---: |",
            f"| alone | {noisy['p50_alone_us']:.1f} | {noisy['p99_alone_us']:.1f} |",
            f"| beside the throttled noisy volume | {noisy['p50_beside_us']:.1f} "
            f"| {noisy['p99_beside_us']:.1f} |",
            "",
            f"p99 beside / alone: {noisy['p99_ratio']:.2f}x (target <= {noisy['target']}x: {met}).",
        ]
    if report["failures"]:
        lines += ["", "Failures (the case's numbers are missing above):", ""]
        for name, err in report["failures"].items():
            lines.append(f"- **{name}**: `{err.splitlines()[0][:200]}`")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "qemu": qemu_version(),
        "python": platform.python_version(),
        "cpu": cpu,
        "loadavg": load,  # 1, 5, 15 min (as `uptime` shows), at the end of the run
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.blk", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per case")
    p.add_argument("--warmup", type=float, default=0.5, help="uncounted seconds per case")
    p.add_argument("--image-mib", type=int, default=None, help="image size (256; 64 with --rbd)")
    p.add_argument("--backends", default=None, help="comma-separated")
    p.add_argument(
        "--rbd", action="store_true", help="the RBD cases, on a single-node Ceph started here"
    )
    p.add_argument("--tmpdir", default="/dev/shm", help="where image and sockets live")
    p.add_argument("--json", type=Path, default=None, help="results (bench/results/blk*.json)")
    p.add_argument("--markdown", type=Path, default=REPO / "docs" / "benchmarks.md")
    p.add_argument("--runs", type=int, default=3, help="alternating runs; rows are medians")
    p.add_argument(
        "--no-noisy", action="store_true", help="skip the noisy-neighbour case (file volumes)"
    )
    args = p.parse_args(argv)
    load_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    allowed: tuple[str, ...] = RBD_BACKEND_KINDS if args.rbd else FILE_VARIANTS
    if args.image_mib is None:
        args.image_mib = 64 if args.rbd else 256
    if args.json is None:
        args.json = REPO / "bench" / "results" / ("blk_rbd.json" if args.rbd else "blk.json")
    kinds: list[str] = []
    for name in (args.backends or ",".join(allowed)).split(","):
        if name not in allowed:
            p.error(f"unknown back-end {name!r}; choose from {', '.join(allowed)}")
        kinds.append(name)

    print(_HEADER, flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bmaas-bench-blk-", dir=args.tmpdir))
    ceph: CephCluster | None = None
    try:
        if args.rbd:
            ceph = CephCluster(base_dir=workdir).start()
            print(f"(single-node Ceph started in {ceph.start_seconds:.1f} s)", flush=True)
        bench = _Bench(kinds, args, workdir, ceph)
        try:
            for _ in range(args.runs):
                bench.run()
        finally:
            bench.close()
        noisy = None if args.rbd or args.no_noisy else noisy_neighbour(args, workdir)
    finally:
        if ceph is not None:
            ceph.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    results, failures = medians(bench.results), bench.failures

    report: dict[str, Any] = {
        "benchmark": "blk",
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "loadavg_start": load_start,
        "params": {
            "runs": args.runs,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "block_size": BLOCK,
            "image_mib": args.image_mib,
            "image_dir": args.tmpdir,
            "qd_is_per_queue": True,
        },
        "results": [asdict(r) for r in results],
        "comparison": compare(results),
        "failures": failures,
        "rbd": bool(args.rbd),
        "noisy_neighbour": noisy,
        "all_runs": [asdict(r) for r in bench.results],
    }
    if ceph is not None:
        report["ceph_start_seconds"] = round(ceph.start_seconds, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    body = render_markdown(report, results)
    if args.rbd:
        write_section("blk-rbd", "Block on Ceph RBD (bench/blk.py --rbd)", body, doc=args.markdown)
    else:
        write_section("blk", "Block (bench/blk.py)", body, doc=args.markdown)
    print()
    print(body)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
