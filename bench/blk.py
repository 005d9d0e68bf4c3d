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
import os
import platform
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.doc import write_section
from offload.testing import BlkQueue, FrontendError, VhostUserBlkFrontend, wait_any
from tools.region.blk_backends import (
    BACKEND_KINDS,
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
    ("offload-blk", "qsd"): (2.0, 0.5),
    ("offload-blk-rbd", "qsd-rbd"): (1.5, 1.0),
}


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
        backend=backend.kind,
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
        self, kind: BackendKind, image: Path, workdir: Path, ceph_conf: Path | None = None
    ) -> None:
        self.backend = BlkBackend(
            kind, image, queues=2, tmp_root=str(workdir), ceph_conf=ceph_conf
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
        kinds: list[BackendKind],
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
        self.sessions: dict[BackendKind, _Session] = {}
        self.failures: dict[str, str] = {}
        self.results: list[CaseResult] = []

    def _session(self, kind: BackendKind) -> _Session | None:
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

    def _case(self, kind: BackendKind, *, op: str, qd: int, nq: int) -> None:
        session = self._session(kind)
        if session is None:
            return
        try:
            res = run_case(
                session.fe,
                session.backend,
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
                        "iops_target_met": iops_ratio >= iops_min if qd == 32 else None,
                        "cpu_target": cpu_max,
                        "iops_target": iops_min,
                    }
                )
    return out


def render_markdown(report: dict[str, Any], results: list[CaseResult]) -> str:
    m = report["machine"]
    lines = [
        f"Run {report['timestamp']} on {m['nproc']} CPUs ({m['cpu']}), kernel {m['kernel']}, "
        f"{m['qemu']}; {report['params']['seconds']} s per case after "
        f"{report['params']['warmup']} s warm-up, {report['params']['image_mib']} MiB image "
        f"{'in an RBD pool on a single-node Ceph' if report.get('rbd') else 'in tmpfs'}."
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
            f"Targets: back-end CPU per I/O <= {first['cpu_target']}x qsd's; "
            f"IOPS >= {first['iops_target']}x qsd's at QD32.",
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
    if report["failures"]:
        lines += ["", "Failures (the case's numbers are missing above):", ""]
        for name, err in report["failures"].items():
            lines.append(f"- **{name}**: `{err.splitlines()[0][:200]}`")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
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
    args = p.parse_args(argv)
    allowed = RBD_BACKEND_KINDS if args.rbd else BACKEND_KINDS
    if args.image_mib is None:
        args.image_mib = 64 if args.rbd else 256
    if args.json is None:
        args.json = REPO / "bench" / "results" / ("blk_rbd.json" if args.rbd else "blk.json")
    kinds: list[BackendKind] = []
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
            bench.run()
        finally:
            bench.close()
    finally:
        if ceph is not None:
            ceph.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    results, failures = bench.results, bench.failures

    report: dict[str, Any] = {
        "benchmark": "blk",
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "params": {
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
