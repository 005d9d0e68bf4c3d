"""Seeds, bounded runs and long campaigns over the targets (``python -m fuzz ...``).

* ``seeds``: writes each target's ``seeds()`` to ``<out>/<target>/seed-<name>``
  (the meaningful starting inputs; the fuzzer's finds sit beside them).
* ``bounded(target, runs=N)``: replays the target's corpus, then mutates
  until ``N`` executions in all, with a per-input timeout; new inputs go to a
  scratch directory, so the repository's corpus is only read.  Returns the
  exit status and libFuzzer's final statistics (what ``tests/fuzz`` checks).
* ``campaign``: each target for ``--seconds`` (``-max_total_time``), growing
  a working corpus under ``<work>/<target>`` (``--work``, by default
  ``.cache/fuzz``), with crashes saved to ``<work>/artifacts/``; then
  ``-merge=1`` adds to ``fuzz/corpus/<target>`` only the inputs that bring
  new coverage edges, so the committed corpus stays small.  ``--jobs`` runs
  that many targets at once.
* ``minimize``: rebuilds a target's corpus from its seeds, its crash inputs
  and whichever other inputs still add coverage edges.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fuzz.targets import TARGETS

__all__ = ["CORPUS", "RunResult", "bounded", "corpus_dir", "main", "write_seeds"]

ROOT: Final = Path(__file__).resolve().parent.parent
CORPUS: Final = ROOT / "fuzz" / "corpus"
WORK: Final = ROOT / ".cache" / "fuzz"
TIMEOUT_S: Final = 10
RSS_LIMIT_MB: Final = 2048
_STAT = re.compile(rb"^stat::(\w+):\s+(\d+)", re.MULTILINE)
_MERGED = re.compile(rb"MERGE-OUTER: (\d+) new files")
# Merges into the committed corpus count coverage edges only, not hit counts:
# an input that only runs a loop more often than another does not get in.
_MERGE_FLAGS: Final = ["-merge=1", "-use_counters=0"]
_KEPT_PREFIXES: Final = ("seed-", "crash-")


def corpus_dir(target: str) -> Path:
    return CORPUS / target


def write_seeds(out: Path = CORPUS) -> dict[str, int]:
    """Write every target's seeds; returns how many each target has."""
    counts: dict[str, int] = {}
    for target in TARGETS:
        module = importlib.import_module(f"fuzz.targets.{target}")
        seeds: dict[str, bytes] = module.seeds()
        folder = out / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (folder / f"seed-{name}").write_bytes(data)
        counts[target] = len(seeds)
    return counts


@dataclass(frozen=True)
class RunResult:
    """One libFuzzer process: its exit status, final statistics and output."""

    returncode: int
    stats: dict[str, int]
    output: str
    seconds: float

    @property
    def executions(self) -> int:
        return self.stats.get("number_of_executed_units", 0)

    @property
    def exec_per_sec(self) -> int:
        """Executions per second of wall time, start-up (imports, instrumentation) included."""
        return round(self.executions / self.seconds) if self.seconds > 0 else 0


def _fuzz_command(target: str, flags: list[str], dirs: list[Path]) -> list[str]:
    return [sys.executable, "-m", "fuzz", "run", target, *flags, *map(str, dirs)]


def bounded(
    target: str,
    *,
    runs: int,
    corpus: Path | None = None,
    scratch: Path,
    timeout_s: int = TIMEOUT_S,
    seed: int = 1,
) -> RunResult:
    """Replay ``corpus`` (the target's own by default), then fuzz up to ``runs`` executions."""
    new = scratch / "new"
    artifacts = scratch / "artifacts"
    new.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    flags = [
        f"-runs={runs}",
        f"-timeout={timeout_s}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-seed={seed}",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
    ]
    dirs = [new, corpus if corpus is not None else corpus_dir(target)]
    started = time.monotonic()
    proc = subprocess.run(
        _fuzz_command(target, flags, dirs), cwd=ROOT, capture_output=True, check=False
    )
    seconds = time.monotonic() - started
    stats = {k.decode(): int(v) for k, v in _STAT.findall(proc.stderr + proc.stdout)}
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    return RunResult(proc.returncode, stats, output, seconds)


def _campaign_one(target: str, seconds: int, root: Path) -> str:
    work = root / target
    artifacts = root / "artifacts"
    work.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    flags = [
        f"-max_total_time={seconds}",
        f"-timeout={TIMEOUT_S}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-artifact_prefix={artifacts}/{target}-",
        "-print_final_stats=1",
    ]
    run = subprocess.run(
        _fuzz_command(target, flags, [work, corpus_dir(target)]),
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    stats = dict(_STAT.findall(run.stderr))
    merge = subprocess.run(
        _fuzz_command(target, _MERGE_FLAGS, [corpus_dir(target), work]),
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    merged = _MERGED.search(merge.stderr)
    units = int(stats.get(b"number_of_executed_units", b"0"))
    speed = int(stats.get(b"average_exec_per_sec", b"0"))
    verdict = "ok" if run.returncode == 0 else f"FAILED (exit {run.returncode}, see {artifacts})"
    if merge.returncode != 0 or merged is None:
        verdict += f"; merge failed (exit {merge.returncode})"
    added = 0 if merged is None else int(merged.group(1))
    files = sum(1 for _ in corpus_dir(target).iterdir())
    return (
        f"{target}: {verdict}; {units} executions, {speed}/s; "
        f"{added} inputs added, corpus {files} files"
    )


def minimize(target: str) -> tuple[int, int]:
    """Shrink a target's corpus to seeds, crashes and inputs that add edges; (before, after)."""
    folder = corpus_dir(target)
    before = sum(1 for _ in folder.iterdir())
    with tempfile.TemporaryDirectory(prefix=f"bmaas-fuzz-min-{target}-") as tmp:
        kept = Path(tmp)
        for path in folder.iterdir():
            if path.name.startswith(_KEPT_PREFIXES):
                shutil.copy(path, kept / path.name)
        merge = subprocess.run(
            _fuzz_command(target, _MERGE_FLAGS, [kept, folder]),
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
        if merge.returncode != 0 or _MERGED.search(merge.stderr) is None:
            raise RuntimeError(f"{target}: merge failed:\n{merge.stderr.decode()[-3000:]}")
        for path in folder.iterdir():
            path.unlink()
        for path in kept.iterdir():
            shutil.copy(path, folder / path.name)
    return before, sum(1 for _ in folder.iterdir())


def campaign(targets: list[str], *, seconds: int, jobs: int, work: Path = WORK) -> list[str]:
    """Fuzz each target for ``seconds`` and merge new coverage into the corpus."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda t: _campaign_one(t, seconds, work), targets))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="TARGET [libFuzzer flags] [corpus dirs]")
    seeds = sub.add_parser("seeds", help="write every target's seed inputs")
    seeds.add_argument("--out", type=Path, default=CORPUS)
    camp = sub.add_parser("campaign", help="fuzz for a while and merge into the corpus")
    camp.add_argument("--seconds", type=int, default=300)
    camp.add_argument("--jobs", type=int, default=1)
    camp.add_argument("--work", type=Path, default=WORK, help="working corpus and crashes")
    camp.add_argument("targets", nargs="*", metavar="TARGET", help=", ".join(TARGETS))
    mini = sub.add_parser("minimize", help="shrink corpora to seeds, crashes and new edges")
    mini.add_argument("targets", nargs="*", metavar="TARGET", help=", ".join(TARGETS))
    check = sub.add_parser("check", help="the bounded run of make test, for every target")
    check.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args(argv)
    if args.command == "seeds":
        for target, count in write_seeds(args.out).items():
            print(f"{target}: {count} seeds")
        return 0
    if args.command in ("campaign", "minimize"):
        targets = args.targets or list(TARGETS)
        unknown = sorted(set(targets) - set(TARGETS))
        if unknown:
            parser.error(f"unknown targets {unknown}; there are {', '.join(TARGETS)}")
    if args.command == "minimize":
        for target in targets:
            before, after = minimize(target)
            print(f"{target}: {before} -> {after} files")
        return 0
    if args.command == "campaign":
        lines = campaign(targets, seconds=args.seconds, jobs=args.jobs, work=args.work)
        print("\n".join(lines))
        return 0 if all(": ok;" in line for line in lines) else 1
    failed = 0
    with tempfile.TemporaryDirectory(prefix="bmaas-fuzz-") as tmp:
        for target in TARGETS:
            result = bounded(target, runs=args.runs, scratch=Path(tmp) / target)
            ok = result.returncode == 0
            failed += not ok
            print(f"{target}: {'ok' if ok else 'FAILED'}; {result.executions} executions, "
                  f"{result.exec_per_sec}/s")  # fmt: skip
            if not ok:
                print(result.output[-4000:])
    return 1 if failed else 0
