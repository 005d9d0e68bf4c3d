"""``bench.net``'s results: one run, the medians per case, the ratios to the
DPDK references, and the Markdown section of ``docs/benchmarks.md``."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Literal

Backend = Literal["offload-net", "dpdk-vhost", "dpdk-vhost-tap"]
BACKENDS: tuple[Backend, ...] = ("offload-net", "dpdk-vhost", "dpdk-vhost-tap")
Direction = Literal["tx", "rx"]
DIRECTIONS: tuple[Direction, ...] = ("tx", "rx")
FRAME_SIZES = (64, 1500)
TARGET_RATIO_1500 = 0.25


@dataclass
class RunResult:
    backend: str
    direction: str
    frame: int
    run: int
    packets: int
    seconds: float
    pps: float
    backend_cpu_us_per_pkt: float
    backend_cpu_util: float  # CPU seconds per wall second (1.0 = one core)
    offered_pps: float | None


@dataclass
class CaseSummary:
    backend: str
    direction: str
    frame: int
    runs: int
    pps: float
    pps_min: float
    pps_max: float
    gbit_s: float
    backend_cpu_us_per_pkt: float
    backend_cpu_util: float
    offered_pps: float | None


def summarize(results: list[RunResult]) -> list[CaseSummary]:
    out: list[CaseSummary] = []
    keys: dict[tuple[str, str, int], list[RunResult]] = {}
    for r in results:
        keys.setdefault((r.backend, r.direction, r.frame), []).append(r)
    for (backend, direction, frame), runs in keys.items():
        pps = [r.pps for r in runs]
        offered = [r.offered_pps for r in runs if r.offered_pps is not None]
        med = statistics.median(pps)
        out.append(
            CaseSummary(
                backend=backend,
                direction=direction,
                frame=frame,
                runs=len(runs),
                pps=round(med, 1),
                pps_min=min(pps),
                pps_max=max(pps),
                gbit_s=round(med * frame * 8 / 1e9, 3),
                backend_cpu_us_per_pkt=round(
                    statistics.median(r.backend_cpu_us_per_pkt for r in runs), 3
                ),
                backend_cpu_util=round(statistics.median(r.backend_cpu_util for r in runs), 3),
                offered_pps=round(statistics.median(offered), 1) if offered else None,
            )
        )
    return out


def compare(summaries: list[CaseSummary], results: list[RunResult]) -> list[dict[str, Any]]:
    """offload-net against each DPDK back-end per direction and frame size.

    ``pps_ratio`` is the ratio of the medians; ``pps_ratio_paired`` the median
    of the ratios of back-to-back runs (run i of each back-end), which cancels
    some of the neighbours' load changes; a target is judged on the lower.
    The issue's target is against ``dpdk-vhost``; ``dpdk-vhost-tap`` (the same
    job as offload-net: vhost-user <-> TAP) is the like-for-like reference.
    """
    by = {(s.backend, s.direction, s.frame): s for s in summaries}
    runs = {(r.backend, r.direction, r.frame, r.run): r for r in results}
    out: list[dict[str, Any]] = []
    for frame in FRAME_SIZES:
        for direction in DIRECTIONS:
            for reference in ("dpdk-vhost", "dpdk-vhost-tap"):
                ours, ref = (
                    by.get(("offload-net", direction, frame)),
                    by.get((reference, direction, frame)),
                )
                if ours is None or ref is None or not ref.pps:
                    continue
                ratio = ours.pps / ref.pps
                paired = [
                    a.pps / b.pps
                    for (kind, d, f, i), a in runs.items()
                    if (kind, d, f) == ("offload-net", direction, frame)
                    and (b := runs.get((reference, direction, frame, i))) is not None
                    and b.pps
                ]
                paired_ratio = statistics.median(paired) if paired else ratio
                worst = min(ratio, paired_ratio)
                out.append(
                    {
                        "reference": reference,
                        "direction": direction,
                        "frame": frame,
                        "pps_ratio": round(ratio, 3),
                        "pps_ratio_paired": round(paired_ratio, 3),
                        "cpu_per_pkt_ratio": round(
                            ours.backend_cpu_us_per_pkt / ref.backend_cpu_us_per_pkt, 1
                        )
                        if ref.backend_cpu_us_per_pkt
                        else None,
                        "target_met": worst >= TARGET_RATIO_1500 if frame == 1500 else None,
                    }
                )
    return out


_DIR_NAME = {"tx": "guest TX", "rx": "guest RX"}
RUN_HEADER = (
    "| back-end | direction | frame B | run | packets/s | back-end CPU µs/pkt "
    "| back-end CPU % | offered pps |\n"
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def run_row(r: RunResult) -> str:
    offered = f"{r.offered_pps:,.0f}" if r.offered_pps is not None else ""
    return (
        f"| {r.backend} | {_DIR_NAME[r.direction]} | {r.frame} | {r.run} | {r.pps:,.0f} "
        f"| {r.backend_cpu_us_per_pkt:.2f} | {r.backend_cpu_util * 100:.0f} | {offered} |"
    )


def render_markdown(report: dict[str, Any], summaries: list[CaseSummary]) -> str:
    m, p = report["machine"], report["params"]
    lines = [
        f"Run {report['timestamp']} on {m['nproc']} CPUs ({m['cpu']}), kernel {m['kernel']}, "
        f"{m['dpdk']}, Python {m['python']}; load average {m['loadavg_before']} before the "
        f"run.  {p['runs']} runs of {p['seconds']} s per case after {p['warmup']} s warm-up, "
        "alternating back-ends; medians (min-max over runs).  Front-end: `dpdk-testpmd` with "
        "a `net_virtio_user0` port on `--no-huge` (memfd) memory, forwarding on CPU 1; "
        "back-end on CPU 0.  Back-ends: `offload-net` (vhost-user <-> TAP); `dpdk-vhost` "
        "(testpmd `net_vhost0` in `rxonly`/`txonly`: frames dropped or generated in "
        "userspace, the issue's reference); `dpdk-vhost-tap` (testpmd `net_vhost0` + "
        "`net_tap` in `io` forwarding: offload-net's job done by DPDK).  Guest TX = "
        "front-end `txonly` to the back-end; guest RX = back-end to front-end `rxonly` "
        "(the TAP back-ends' frames come from a testpmd `net_tap` generator bridged to "
        "their TAP, on CPU 1; offered = its rate).  Packets/s "
        "are the front-end's port counters; CPU is utime+stime of the whole back-end "
        "process per packet and per second (CPU %: 100 = one core).  Both back-ends share "
        "CPU 0 with other work, so rates follow the CPU share each got; the DPDK back-end "
        "busy-polls, so its CPU per packet is an upper bound.",
        "",
        "| back-end | direction | frame B | packets/s | min-max | Gbit/s | "
        "back-end CPU µs/pkt | back-end CPU % | offered pps |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for s in sorted(summaries, key=lambda s: (s.frame, s.direction != "tx", s.backend)):
        offered = f"{s.offered_pps:,.0f}" if s.offered_pps is not None else ""
        lines.append(
            f"| {s.backend} | {_DIR_NAME[s.direction]} | {s.frame} | {s.pps:,.0f} "
            f"| {s.pps_min:,.0f}-{s.pps_max:,.0f} | {s.gbit_s:.2f} "
            f"| {s.backend_cpu_us_per_pkt:.2f} | {s.backend_cpu_util * 100:.0f} | {offered} |"
        )
    if report["comparison"]:
        lines += [
            "",
            f"Target: offload-net >= {TARGET_RATIO_1500:.2f}x DPDK vhost's packets/s at 1500 B "
            "(the issue's reference is `dpdk-vhost`; `dpdk-vhost-tap` does the same work as "
            "offload-net).",
            "",
            "| reference | direction | frame B | packets/s offload-net/reference (medians) "
            "| same, paired runs | CPU µs/pkt offload-net/reference | >= 0.25x |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for c in report["comparison"]:
            verdict = {True: "met", False: "missed", None: "-"}[c["target_met"]]
            cpu = f"{c['cpu_per_pkt_ratio']:.1f}" if c["cpu_per_pkt_ratio"] is not None else ""
            lines.append(
                f"| {c['reference']} | {_DIR_NAME[c['direction']]} | {c['frame']} "
                f"| {c['pps_ratio']:.3f} "
                f"| {c['pps_ratio_paired']:.3f} | {cpu} | {verdict} |"
            )
    if report["failures"]:
        lines += ["", "Failures (these runs are missing above):", ""]
        for name, err in report["failures"].items():
            lines.append(f"- **{name}**: `{err.splitlines()[0][:200] if err else '?'}`")
    return "\n".join(lines)
