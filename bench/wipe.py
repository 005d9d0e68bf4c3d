"""Wipe benchmark: ``wipe_disk`` on a 100 GiB sparse file with 1 GiB of data.

Run ``python -m bench.wipe``.  Each run creates a sparse file of
``--size-gib`` in a temp directory under ``--tmpdir`` (default: the repo's
``.cache``, i.e. the disk ``/work`` lives on; tmpfs would flatter the
numbers and is refused), writes ``--data-mib`` MiB of random bytes in 1 MiB
pieces at random 1 MiB-aligned offsets (scattered extents, like a used
instance-store disk), fsyncs, and then times ``host_agent.storage.wipe_disk``
(punch, fsync, read-back of the remaining extents plus ``--samples`` 4 KiB
samples).  The file is deleted after each run; ``--runs`` runs.

Results (every run and the median) go to ``bench/results/wipe.json`` and are
printed.  Also recorded: the file system type and which method
``clone_volume`` picks there (from a 4 MiB clone).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.doc import write_section
from host_agent.storage.clone import clone_volume
from host_agent.storage.wipe import wipe_disk

MIB = 1 << 20
GIB = 1 << 30
REPO = Path(__file__).resolve().parent.parent


def fs_type(path: Path) -> str:
    """The file system type of the mount holding *path* (from mountinfo)."""
    best, kind = "", "unknown"
    target = str(path.resolve())
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mount = fields[4]
        fstype = fields[fields.index("-") + 1]
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, fstype
    return kind


def make_disk(path: Path, *, size: int, data: int, seed: int) -> float:
    """A sparse file of *size* with *data* bytes in scattered 1 MiB pieces; seconds taken."""
    started = time.monotonic()
    rng = random.Random(seed)
    slots = rng.sample(range(size // MIB), data // MIB)
    chunk = os.urandom(MIB)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        for slot in slots:
            os.pwrite(fd, chunk, slot * MIB)
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.monotonic() - started


def clone_method(directory: Path) -> str:
    src, dst = directory / "clone-src.img", directory / "clone-dst.img"
    src.write_bytes(os.urandom(4 * MIB))
    try:
        return clone_volume(src, dst, size_bytes=8 * MIB).method
    finally:
        src.unlink()
        dst.unlink(missing_ok=True)


def machine_info(directory: Path) -> dict[str, Any]:
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
        "python": platform.python_version(),
        "cpu": cpu,
        "filesystem": fs_type(directory),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.wipe", description=__doc__.splitlines()[0])
    p.add_argument("--size-gib", type=int, default=100, help="logical size of the sparse file")
    p.add_argument("--data-mib", type=int, default=1024, help="scattered data written per run")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--samples", type=int, default=1024, help="sampled 4 KiB reads per wipe")
    p.add_argument("--tmpdir", type=Path, default=REPO / ".cache", help="not tmpfs")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "wipe.json")
    p.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = p.parse_args(argv)
    args.tmpdir.mkdir(parents=True, exist_ok=True)
    fs = fs_type(args.tmpdir)
    if fs == "tmpfs":
        p.error(f"{args.tmpdir} is on tmpfs; the benchmark needs a disk-backed file system")
    size, data = args.size_gib * GIB, args.data_mib * MIB
    if shutil.disk_usage(args.tmpdir).free < data + GIB:
        p.error(f"{args.tmpdir} has less than {args.data_mib} MiB + 1 GiB free")

    workdir = Path(tempfile.mkdtemp(prefix="bmaas-bench-wipe-", dir=args.tmpdir))
    runs: list[dict[str, Any]] = []
    try:
        method = clone_method(workdir)
        print(f"{fs} at {args.tmpdir}; clone_volume uses {method}", flush=True)
        for i in range(args.runs):
            disk = workdir / "disk.img"
            setup_s = make_disk(disk, size=size, data=data, seed=i)
            allocated = os.stat(disk).st_blocks * 512
            res = wipe_disk(disk, samples=args.samples)
            disk.unlink()
            run = {"run": i, "setup_seconds": round(setup_s, 3), "allocated_before": allocated}
            run.update(asdict(res))
            run["seconds"] = round(res.seconds, 4)
            runs.append(run)
            released, read = res.bytes_released / MIB, res.bytes_read_back / MIB
            print(
                f"run {i}: {res.seconds * 1000:.0f} ms ({res.method}, released "
                f"{released:.0f} MiB, read back {read:.1f} MiB)",
                flush=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    seconds = [r["seconds"] for r in runs]
    report: dict[str, Any] = {
        "benchmark": "wipe",
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(args.tmpdir),
        "params": {
            "size_bytes": size,
            "data_bytes": data,
            "piece_bytes": MIB,
            "runs": args.runs,
            "samples": args.samples,
            "tmpdir": str(args.tmpdir),
        },
        "clone_method": method,
        "median_seconds": round(statistics.median(seconds), 4),
        "min_seconds": min(seconds),
        "max_seconds": max(seconds),
        "runs": runs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"median {report['median_seconds'] * 1000:.0f} ms over {len(runs)} runs -> {args.json}")
    if not args.no_doc:
        write_doc(report)
    return 0


def write_doc(report: dict[str, Any]) -> None:
    """The section between ``<!-- wipe:begin -->`` and ``<!-- wipe:end -->``."""
    params, runs = report["params"], report["runs"]
    text = "\n".join(
        [
            f"Run {report['timestamp']}; a {params['size_bytes'] // GIB} GiB sparse file holding "
            f"{params['data_bytes'] // MIB} MiB in 1 MiB pieces at random offsets, on "
            f"{report['machine'].get('fs', 'disk')} (not tmpfs); {params['runs']} runs.",
            "",
            "| | median | min | max | method | read back |",
            "| --- | ---: | ---: | ---: | --- | ---: |",
            f"| wipe + verify | {report['median_seconds'] * 1000:.0f} ms "
            f"| {report['min_seconds'] * 1000:.0f} ms | {report['max_seconds'] * 1000:.0f} ms "
            f"| {runs[0]['method']} | {runs[0]['bytes_read_back'] // MIB} MiB |",
            "",
            f"Boot-disk clones on this file system use `{report['clone_method']}`.",
        ]
    )
    write_section("wipe", "Wiping a local disk (bench/wipe.py)", text)


if __name__ == "__main__":
    raise SystemExit(main())
