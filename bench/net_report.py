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
# Issue 17: offload-net >= 0.6x dpdk-vhost-tap's packets/s at 1500 B guest TX.
TARGET_REFERENCE = "dpdk-vhost-tap"
TARGET_RATIO_1500 = 0.6
SendMode = Literal["no-offload", "csum", "tso"]
# Issue 17: with TSO at least 5x the bytes/s of the feature set before offloads.
TARGET_TSO_RATIO = 5.0


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
    The target (issue 17) is against ``dpdk-vhost-tap`` (the same job as
    offload-net: vhost-user <-> TAP) at 1500 B guest TX; ``dpdk-vhost``
    (frames dropped or made in userspace) is shown for scale.
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
                        "target_met": worst >= TARGET_RATIO_1500
                        if (frame, direction, reference) == (1500, "tx", TARGET_REFERENCE)
                        else None,
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
    m = report["machine"]
    lines = [
        f"Run {report['timestamp']} on {m['nproc']} CPUs ({m['cpu']}), kernel {m['kernel']}, "
        f"{m['dpdk']}, Python {m['python']}; load average {m['loadavg_before']} before the "
        f"run, {m['loadavg_after']} after.",
    ]
    if summaries:
        lines += ["", *_render_pps(report, summaries)]
    if report.get("send_summary"):
        lines += render_send(report)
    if report["failures"]:
        lines += ["", "Failures (these runs are missing above):", ""]
        for name, err in report["failures"].items():
            lines.append(f"- **{name}**: `{err.splitlines()[0][:200] if err else '?'}`")
    return "\n".join(lines)


def _render_pps(report: dict[str, Any], summaries: list[CaseSummary]) -> list[str]:
    p = report["params"]
    lines = [
        "### Packet rates: offload-net against DPDK's vhost back-ends",
        "",
        f"{p['runs']} runs of {p['seconds']} s per case after {p['warmup']} s warm-up, "
        "alternating back-ends; medians (min-max over runs).  Front-end: `dpdk-testpmd` with "
        "a `net_virtio_user0` port on `--no-huge` (memfd) memory, forwarding on CPU 1; "
        "back-end on CPU 0.  Back-ends: `offload-net` (vhost-user <-> TAP); `dpdk-vhost` "
        "(testpmd `net_vhost0` in `rxonly`/`txonly`: frames dropped or generated in "
        "userspace, for scale); `dpdk-vhost-tap` (testpmd `net_vhost0` + "
        "`net_tap` in `io` forwarding: offload-net's job done by DPDK, the reference).  Guest TX = "
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
    shares = [s.backend_cpu_util for s in summaries]
    if shares and min(shares) < 0.9:
        lines += [
            "",
            f"The back-ends got {min(shares) * 100:.0f}-{max(shares) * 100:.0f}% of a CPU "
            "(medians per case): the machine was loaded, so packet rates follow the CPU "
            "share each back-end got and move a lot between runs; the CPU per packet is "
            "the comparison that holds (if both had a whole CPU, the packet-rate ratio would "
            "be about the inverse of the CPU-per-packet ratio).",
        ]
    if report["comparison"]:
        lines += [
            "",
            f"Target: offload-net >= {TARGET_RATIO_1500:.1f}x `{TARGET_REFERENCE}`'s packets/s "
            "at 1500 B guest TX (`dpdk-vhost-tap` does the same work as offload-net; "
            "`dpdk-vhost` is for scale).",
            "",
            "| reference | direction | frame B | packets/s offload-net/reference (medians) "
            f"| same, paired runs | CPU µs/pkt offload-net/reference | >= {TARGET_RATIO_1500}x |",
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
    return lines


# --------------------------------------------------------------------------- 64 KiB sends


@dataclass
class SendResult:
    mode: str
    run: int
    bytes: int
    seconds: float
    mib_per_s: float
    frames_per_mib: float  # frames the guest transmitted (data, ACKs, retransmissions)
    backend_cpu_ms_per_mib: float
    frontend_cpu_ms_per_mib: float


_SEND_MODES = ("no-offload", "csum", "tso")
_SEND_NAME = {
    "no-offload": "no offloads (as before)",
    "csum": "CSUM, no TSO",
    "tso": "CSUM + TSO",
}


def summarize_send(results: list[SendResult]) -> list[dict[str, Any]]:
    """Medians per mode, and each mode's bytes/s against ``no-offload`` (medians, paired)."""
    by: dict[str, list[SendResult]] = {}
    for r in results:
        by.setdefault(r.mode, []).append(r)
    base = by.get("no-offload", [])
    base_runs = {r.run: r for r in base}
    base_median = statistics.median(r.mib_per_s for r in base) if base else None
    out: list[dict[str, Any]] = []
    for mode in _SEND_MODES:
        runs = by.get(mode)
        if not runs:
            continue
        med = statistics.median(r.mib_per_s for r in runs)
        paired = [
            r.mib_per_s / b.mib_per_s
            for r in runs
            if (b := base_runs.get(r.run)) is not None and b.mib_per_s
        ]
        ratio = med / base_median if base_median else None
        paired_ratio = statistics.median(paired) if paired else ratio
        out.append(
            {
                "mode": mode,
                "runs": len(runs),
                "mib_per_s": round(med, 2),
                "mib_per_s_min": min(r.mib_per_s for r in runs),
                "mib_per_s_max": max(r.mib_per_s for r in runs),
                "frames_per_mib": statistics.median(r.frames_per_mib for r in runs),
                "backend_cpu_ms_per_mib": round(
                    statistics.median(r.backend_cpu_ms_per_mib for r in runs), 3
                ),
                "frontend_cpu_ms_per_mib": round(
                    statistics.median(r.frontend_cpu_ms_per_mib for r in runs), 3
                ),
                "ratio": round(ratio, 2) if ratio is not None else None,
                "ratio_paired": round(paired_ratio, 2) if paired_ratio is not None else None,
                "target_met": min(ratio, paired_ratio) >= TARGET_TSO_RATIO
                if mode == "tso" and ratio is not None and paired_ratio is not None
                else None,
            }
        )
    return out


def render_send(report: dict[str, Any]) -> list[str]:
    p = report["params"]
    lines = [
        "",
        "### 64 KiB guest sends: TCP through offload-net with and without TSO",
        "",
        f"`bench/net_send.py`, {p['send_runs']} rounds of {p['send_seconds']} s per mode, modes "
        "alternating: the guest (the Python front-end of `offload.testing` with its small "
        "TCP, on CPU 1) sends a stream in 64,240-byte pieces (44 x 1460 MSS) to a kernel "
        "socket on the offload-net TAP's bridge (same namespace); MiB/s acknowledged by "
        "the peer, medians (min-max).  offload-net runs on "
        "CPU 0; CPU ms per MiB is its utime+stime (the kernel's TAP and TCP receive path "
        "included, it runs in offload-net's write) and the front-end thread's.  The guest "
        "offers window scaling with a shift of 0, so the peer's window may pass 64 KiB "
        "(several TSO frames in flight); without offloads the guest also computes every "
        "checksum in Python, which is why its own CPU per MiB is shown.",
        "",
        "| guest features | MiB/s | min-max | frames per MiB | offload-net CPU ms/MiB "
        "| front-end CPU ms/MiB | vs no offloads (medians) | paired runs |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in report["send_summary"]:
        ratio = f"{s['ratio']:.2f}x" if s["ratio"] is not None else ""
        paired = f"{s['ratio_paired']:.2f}x" if s["ratio_paired"] is not None else ""
        lines.append(
            f"| {_SEND_NAME[s['mode']]} | {s['mib_per_s']:.1f} "
            f"| {s['mib_per_s_min']:.1f}-{s['mib_per_s_max']:.1f} | {s['frames_per_mib']:.1f} "
            f"| {s['backend_cpu_ms_per_mib']:.2f} | {s['frontend_cpu_ms_per_mib']:.2f} "
            f"| {ratio} | {paired} |"
        )
    tso = [s for s in report["send_summary"] if s["mode"] == "tso"]
    if tso and tso[0]["target_met"] is not None:
        verdict = "met" if tso[0]["target_met"] else "missed"
        lines += [
            "",
            f"Target: with TSO >= {TARGET_TSO_RATIO:.0f}x the bytes/s without offloads "
            f"(the lower of the two ratios): {verdict}.",
        ]
    return lines
