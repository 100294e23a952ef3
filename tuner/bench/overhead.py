"""``tuner bench overhead``: what the probes cost the workload they observe.

For a syscall-heavy, a context-switch-heavy, a TCP request-response and a TCP connection-churn
workload (a new connection per exchange), runs each
bare, with empty programs on the probes' attach points (all of them, and the syscall probe's
alone), and with all probes attached and observing it (also with the syscall probe sampling
latency, counting only an interest set, or attached for a duty cycle), rotating the arms
round by round so that drifts in machine load hit all alike (each arm attached once a round,
the workloads run under it in turn); then nginx
(:mod:`tuner.bench.nginx`). Reports the throughput ratios (with / without), the nanoseconds
each arm adds to one operation, the raw events per second the BPF side saw, summary records
delivered, records lost, and entities refused (no slot free: sockets or tasks the probes did
not observe); then the nanoseconds per event of each attach point, from one
more run of each workload with the kernel's run-time statistics on
(:mod:`tuner.bench.per_event`).

>>> median([3.0, 1.0, 2.0])
2.0
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tuner import bpfstats
from tuner.bench import nginx, per_event
from tuner.bench.floor import FLOORS, empty_programs
from tuner.errors import TunerError
from tuner.probes.config import ProbeConfig
from tuner.probes.stream import FeatureStream

WORKLOAD_COMM = "tuner_wl"


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def build_workload(cache: Path | None = None) -> Path:
    """Compile ``workload.c`` once (cached by source mtime) and return the binary's path."""
    src = Path(__file__).with_name("workload.c")
    cache = cache or Path(tempfile.gettempdir()) / "tuner-bench"
    binary = cache / WORKLOAD_COMM
    if binary.exists() and binary.stat().st_mtime >= src.stat().st_mtime:
        return binary
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise TunerError("no C compiler to build the benchmark workload", "apt-get install gcc")
    cache.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([cc, "-O2", "-o", str(binary), str(src)], capture_output=True, text=True)
    if proc.returncode:
        raise TunerError(f"cannot build {src.name}: {proc.stderr.strip().splitlines()[-1]}")
    return binary


@dataclass
class Run:
    ops_per_s: float
    events: int = 0
    records: int = 0
    lost: int = 0
    seconds: float = 0.0
    refused: int = 0


#: The arms of each workload: what is attached while it runs. ``floor`` is empty programs on the
#: probes' attach points (bpf/bench_floor.c); ``sysfloor`` the same on raw_syscalls sys_enter and
#: sys_exit only; ``sampled`` is all probes with the syscall probe timing one call in
#: SAMPLED_LATENCY.
ARMS = {
    "syscall": ("bare", "floor", "sysfloor", "probed", "sampled", "interest", "duty"),
    "ctxswitch": ("bare", "floor", "sysfloor", "probed"),
    "tcp": ("bare", "floor", "sysfloor", "probed", "interest"),
    "churn": ("bare", "floor", "sysfloor", "probed"),
}
#: ``interest``: all probes, the syscall probe counting only :data:`INTEREST` (getppid is
#: "other": dropped by its first instructions); ``duty``: all probes, the syscall probe
#: attached :data:`DUTY` of each second.
INTEREST = ("net", "poll")
DUTY = 0.2
#: (argument of workload.c, label in the results)
WORKLOADS = (("sys", "syscall"), ("ctx", "ctxswitch"), ("tcp", "tcp"), ("churn", "churn"))
SAMPLED_LATENCY = 16


def _start(binary: Path, kind: str, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([str(binary), kind, str(seconds)], stdout=subprocess.PIPE, text=True)


def _ops(out: str) -> tuple[float, float]:
    ops, elapsed = out.split()
    return int(ops) / float(elapsed), float(elapsed)


@contextlib.contextmanager
def attached(arm: str) -> Iterator[FeatureStream | None]:
    """What ``arm`` attaches (see :data:`ARMS`), for as long as the block runs: nothing, an
    empty-program floor, or the probes (yielded, observing :data:`WORKLOAD_COMM`)."""
    if arm == "bare":
        yield None
    elif arm in FLOORS:
        with empty_programs(arm):
            yield None
    else:
        with FeatureStream(probe_config(arm)) as stream:
            yield stream


def probe_config(arm: str) -> ProbeConfig:
    """The probes' settings in an arm that attaches them (see :data:`ARMS`).

    >>> probe_config("sampled").latency_sample, probe_config("probed").latency_sample
    (16, 1)
    """
    return ProbeConfig(
        window_ms=100,
        comm=WORKLOAD_COMM,
        latency_sample=SAMPLED_LATENCY if arm == "sampled" else 1,
        syscall_classes=INTEREST if arm == "interest" else (),
        syscall_duty=DUTY if arm == "duty" else 1.0,
    )


def run_workload(
    binary: Path, kind: str, seconds: float, stream: FeatureStream | None = None
) -> Run:
    """One run of a workload under what is attached; ``stream``: the probes, whose events,
    records and losses during the run are counted."""
    if stream is None:
        rate, elapsed = _ops(_start(binary, kind, seconds).communicate()[0])
        return Run(rate, seconds=elapsed)
    before = stream.stats()
    proc = _start(binary, kind, seconds)
    for _ in stream.windows():
        if proc.poll() is not None:
            break
    out = proc.communicate()[0]
    for _ in range(2):  # let the last windows close and drain
        next(stream.windows())
    after = stream.stats()
    rate, elapsed = _ops(out)
    d = [
        (a.events - b.events, a.records - b.records, a.lost - b.lost, a.overflow - b.overflow)
        for a, b in ((after[k], before[k]) for k in after)
    ]
    events, records, lost, refused = (sum(v[i] for v in d) for i in range(4))
    return Run(rate, events, records, lost, elapsed, refused)


def run(seconds: float = 2.0, rounds: int = 3, progress=None) -> dict:
    """Measure every workload under each of its arms; return the figures as a dict (see
    ``--json``).

    Each round runs the arms in a rotated order, so that drifts in machine load hit all alike;
    each arm is attached once per round and the workloads that have it run under it in turn.
    """
    if seconds <= 0 or rounds < 1:
        raise TunerError(f"--seconds must be > 0 and --rounds >= 1 (got {seconds}, {rounds})")
    binary = build_workload()
    result: dict = {"seconds": seconds, "rounds": rounds, "records_lost": 0}
    order = list(dict.fromkeys(a for _, label in WORKLOADS for a in ARMS[label]))
    runs: dict[str, dict[str, list[Run]]] = {lb: {a: [] for a in ARMS[lb]} for _, lb in WORKLOADS}
    for r in range(rounds):
        for i in range(len(order)):
            arm = order[(i + r) % len(order)]
            with attached(arm) as stream:
                for kind, label in WORKLOADS:
                    if arm in ARMS[label]:
                        if progress:
                            progress(f"{label}: round {r + 1}/{rounds}, {arm}")
                        runs[label][arm].append(run_workload(binary, kind, seconds, stream))
    for _, label in WORKLOADS:
        result.update(_figures(label, runs[label]))
        result["records_lost"] += result[f"{label}_records_lost"]
    result["latency_sample"] = SAMPLED_LATENCY
    costs = per_event_costs(binary, seconds, progress)
    result["per_event"] = {lb: {r.attach: r.to_json() for r in rows} for lb, rows in costs.items()}
    try:
        result.update(nginx.run(seconds, rounds, progress))
    except TunerError as e:  # nginx or wrk missing: the other workloads still count
        result["nginx_skipped"] = e.problem
    return result


def per_event_costs(
    binary: Path, seconds: float, progress=None
) -> dict[str, list[per_event.PerEvent]]:
    """Each workload once more under the empty programs and once under all probes, with the
    kernel's run-time statistics on: the ns per event of each attach point (see
    :mod:`tuner.bench.per_event`). Host-wide: other processes' events on the same attach
    points count too, as they do in the throughput arms."""
    empty: dict[str, dict] = {}
    with bpfstats.enabled():
        with empty_programs("floor") as programs:  # compiled once for every workload
            for kind, label in WORKLOADS:
                if progress:
                    progress(f"{label}: ns per event, empty programs")
                with per_event.counted(programs) as empty[label]:
                    run_workload(binary, kind, seconds)
        out = {}
        with FeatureStream(probe_config("probed")) as stream:
            for kind, label in WORKLOADS:
                if progress:
                    progress(f"{label}: ns per event, probes")
                with per_event.counted(stream.programs()) as probe:
                    r = run_workload(binary, kind, seconds, stream)
                out[label] = per_event.per_event(probe, empty[label], r.ops_per_s * r.seconds)
    return out


def _figures(label: str, runs: dict[str, list[Run]]) -> dict:
    """One workload's figures from its runs under each arm."""
    rate = {a: median([x.ops_per_s for x in v]) for a, v in runs.items()}
    probed = runs["probed"]
    out = {
        f"{label}_throughput_ratio": round(rate["probed"] / rate["bare"], 4),
        f"{label}_floor_ratio": round(rate["floor"] / rate["bare"], 4),
        f"{label}_sysfloor_ratio": round(rate["sysfloor"] / rate["bare"], 4),
        f"{label}_bare_ops_per_s": round(rate["bare"]),
        f"{label}_probed_ops_per_s": round(rate["probed"]),
        f"{label}_events_per_s": round(median([p.events / p.seconds for p in probed])),
        f"{label}_records": sum(p.records for p in probed),
        f"{label}_records_lost": sum(x.lost for v in runs.values() for x in v),
        f"{label}_refused_per_s": round(median([p.refused / p.seconds for p in probed])),
    }
    for arm in ("sampled", "interest", "duty"):
        if arm in rate:
            out[f"{label}_{arm}_ratio"] = round(rate[arm] / rate["bare"], 4)
    return out | added_ns(label, rate)


def added_ns(label: str, rate: dict[str, float]) -> dict[str, float]:
    """Nanoseconds each arm adds to one operation of the workload (a ratio depends on how
    cheap the machine's operations are; this does not), and the probes' added time over
    the empty programs' on the same attach points (``probe_over_floor``: 1.0 would be a
    probe that costs nothing beyond being attached).

    >>> r = added_ns("syscall", {"bare": 4e6, "floor": 2e6, "probed": 1.6e6})
    >>> r["syscall_floor_ns"], r["syscall_probed_ns"], r["syscall_probe_over_floor"]
    (250.0, 375.0, 1.5)
    """
    bare_ns = 1e9 / rate["bare"]
    out = {f"{label}_{arm}_ns": round(1e9 / r - bare_ns, 1) for arm, r in rate.items()
           if arm != "bare"}  # fmt: skip
    floor = out.get(f"{label}_floor_ns", 0.0)
    if floor > 0:
        out[f"{label}_probe_over_floor"] = round(out[f"{label}_probed_ns"] / floor, 3)
    return out


def render(r: dict) -> str:
    """The figures as two short tables: throughput ratios to bare with what the probes saw,
    and the nanoseconds each arm adds to one operation.

    >>> print(render({"syscall_bare_ops_per_s": 1000, "syscall_floor_ratio": 0.5,
    ...   "syscall_sysfloor_ratio": 0.6, "syscall_throughput_ratio": 0.4,
    ...   "syscall_sampled_ratio": 0.45, "latency_sample": 16, "syscall_interest_ratio": 0.58,
    ...   "syscall_events_per_s": 800, "syscall_records": 9, "syscall_records_lost": 0,
    ...   "syscall_refused_per_s": 0,
    ...   "syscall_floor_ns": 1000.0, "syscall_probed_ns": 1500.0,
    ...   "syscall_probe_over_floor": 1.5}))
    workload   bare ops/s sysfloor  floor probed sampled interest duty  events/s lost refused/s
    syscall         1,000    0.600  0.500  0.400   0.450    0.580    -       800    0         0
    ns added per op: sysfloor  floor probed sampled interest   duty probe/floor
    syscall                 -   1000   1500       -        -      -       1.500
    sysfloor: empty programs on raw_syscalls; floor: on all the probes' attach points;
    sampled: syscall latency 1 in 16; interest: syscall classes net,poll; duty: 0.2 of a s
    """
    arms = ("sysfloor", "floor", "throughput", "sampled", "interest", "duty")
    widths = (8, 6, 6, 7, 8, 4)
    lines = [f"{'workload':<10} {'bare ops/s':>10} sysfloor  floor probed sampled interest "
             f"duty {'events/s':>9} lost refused/s"]  # fmt: skip
    ns_lines = ["ns added per op: sysfloor  floor probed sampled interest   duty probe/floor"]
    for _kind, label in WORKLOADS:
        if label + "_bare_ops_per_s" not in r:
            continue
        cells = [
            _cell(r.get(f"{label}_{a}_ratio"), w, ".3f") for a, w in zip(arms, widths, strict=True)
        ]
        lines.append(
            f"{label:<10} {r[label + '_bare_ops_per_s']:>10,} {' '.join(cells)} "
            f"{r[label + '_events_per_s']:>9,} {r[label + '_records_lost']:>4} "
            f"{r.get(label + '_refused_per_s', 0):>9,}"
        )
        ns = [_cell(r.get(f"{label}_{a}_ns"), w, ".0f")
              for a, w in zip(("sysfloor", "floor", "probed", "sampled", "interest", "duty"),
                              (8, 6, 6, 7, 8, 6), strict=True)]  # fmt: skip
        ns_lines.append(
            f"{label:<16} {' '.join(ns)} {_cell(r.get(label + '_probe_over_floor'), 11, '.3f')}"
        )
    if "nginx_bare_rps" in r:
        ns_lines.append(
            f"nginx {r['nginx_bare_rps']:,} req/s bare; with the agent's probes "
            f"{r['nginx_agent_ratio']:.3f} of it, with all probes {r['nginx_all_ratio']:.3f}, "
            f"with empty programs on their attach points {r['nginx_floor_ratio']:.3f}"
        )
    elif "nginx_skipped" in r:
        ns_lines.append(f"nginx: skipped ({r['nginx_skipped']})")
    if r.get("per_event"):
        rows = {lb: [_row(a, x) for a, x in v.items()] for lb, v in r["per_event"].items()}
        ns_lines += per_event.render(rows)
    return "\n".join(
        [
            *lines,
            *ns_lines,
            "sysfloor: empty programs on raw_syscalls; floor: on all the probes' attach points;",
            f"sampled: syscall latency 1 in {r.get('latency_sample', SAMPLED_LATENCY)}; "
            f"interest: syscall classes {','.join(INTEREST)}; duty: {DUTY:g} of a s",
        ]
    )


def _row(attach: str, x: dict[str, float]) -> per_event.PerEvent:
    return per_event.PerEvent(attach, x["per_op"], x["probe_ns"], x["empty_ns"])


def _cell(v: float | None, width: int, fmt: str) -> str:
    return f"{'-' if v is None else format(v, fmt):>{width}}"


def progress_line(msg: str) -> None:
    """Show progress on one terminal line (plain lines when stderr is not a terminal)."""
    if sys.stderr.isatty():
        print(f"\r{msg:<60}", end="", file=sys.stderr, flush=True)
    else:
        print(msg, file=sys.stderr, flush=True)
