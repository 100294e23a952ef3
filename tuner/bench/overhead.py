"""``tuner bench overhead``: what the probes cost the workload they observe.

For a syscall-heavy, a context-switch-heavy and a TCP request-response workload, runs each
bare, with empty programs on the probes' attach points (all of them, and the syscall probe's
alone), and with all probes attached and observing it, rotating the arms round by round so
that drifts in machine load hit all alike. Reports the throughput ratios (with / without), the
raw events per second the BPF side saw, summary records delivered and records lost.

>>> median([3.0, 1.0, 2.0])
2.0
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

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


#: The arms of each workload: what is attached while it runs. ``floor`` is empty programs on the
#: probes' attach points (bpf/bench_floor.c); ``sysfloor`` the same on raw_syscalls sys_enter and
#: sys_exit only; ``sampled`` is all probes with the syscall probe timing one call in
#: SAMPLED_LATENCY.
ARMS = {
    "syscall": ("bare", "floor", "sysfloor", "probed", "sampled"),
    "ctxswitch": ("bare", "floor", "sysfloor", "probed"),
    "tcp": ("bare", "floor", "sysfloor", "probed"),
}
#: (argument of workload.c, label in the results)
WORKLOADS = (("sys", "syscall"), ("ctx", "ctxswitch"), ("tcp", "tcp"))
#: Empty-program arms and the defines bpf/bench_floor.c gets for them.
FLOORS = {"floor": [], "sysfloor": ["-DONLY_RAW_SYSCALLS"]}
SAMPLED_LATENCY = 16


def _start(binary: Path, kind: str, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([str(binary), kind, str(seconds)], stdout=subprocess.PIPE, text=True)


def _ops(out: str) -> tuple[float, float]:
    ops, elapsed = out.split()
    return int(ops) / float(elapsed), float(elapsed)


def run_workload(binary: Path, kind: str, seconds: float, arm: str = "probed") -> Run:
    """One run of a workload with ``arm`` attached (see :data:`ARMS`)."""
    if arm == "bare" or arm in FLOORS:
        floor = None
        if arm in FLOORS:
            from tuner import bcc_runtime

            floor = bcc_runtime.compile_program(
                src_file=bcc_runtime.bpf_dir() / "bench_floor.c", cflags=FLOORS[arm]
            )
        try:
            out = _start(binary, kind, seconds).communicate()[0]
        finally:
            if floor is not None:
                floor.cleanup()
        rate, elapsed = _ops(out)
        return Run(rate, seconds=elapsed)
    sample = SAMPLED_LATENCY if arm == "sampled" else 1
    cfg = ProbeConfig(window_ms=100, comm=WORKLOAD_COMM, latency_sample=sample)
    with FeatureStream(cfg) as stream:
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
        (a.events - b.events, a.records - b.records, a.lost - b.lost)
        for a, b in ((after[k], before[k]) for k in after)
    ]
    return Run(rate, *(sum(v[i] for v in d) for i in range(3)), elapsed)


def run(seconds: float = 2.0, rounds: int = 3, progress=None) -> dict:
    """Measure both workloads under every arm; return the figures as a dict (see ``--json``).

    Each round runs the arms in a rotated order, so that drifts in machine load hit all alike.
    """
    if seconds <= 0 or rounds < 1:
        raise TunerError(f"--seconds must be > 0 and --rounds >= 1 (got {seconds}, {rounds})")
    binary = build_workload()
    result: dict = {"seconds": seconds, "rounds": rounds, "records_lost": 0}
    for kind, label in WORKLOADS:
        arms = ARMS[label]
        runs: dict[str, list[Run]] = {a: [] for a in arms}
        for r in range(rounds):
            for i in range(len(arms)):
                arm = arms[(i + r) % len(arms)]
                if progress:
                    progress(f"{label}: round {r + 1}/{rounds}, {arm}")
                runs[arm].append(run_workload(binary, kind, seconds, arm))
        rate = {a: median([x.ops_per_s for x in runs[a]]) for a in arms}
        probed = runs["probed"]
        lost = sum(x.lost for a in arms for x in runs[a])
        result.update(
            {
                f"{label}_throughput_ratio": round(rate["probed"] / rate["bare"], 4),
                f"{label}_floor_ratio": round(rate["floor"] / rate["bare"], 4),
                f"{label}_sysfloor_ratio": round(rate["sysfloor"] / rate["bare"], 4),
                f"{label}_bare_ops_per_s": round(rate["bare"]),
                f"{label}_probed_ops_per_s": round(rate["probed"]),
                f"{label}_events_per_s": round(median([p.events / p.seconds for p in probed])),
                f"{label}_records": sum(p.records for p in probed),
                f"{label}_records_lost": lost,
            }
        )
        if "sampled" in rate:
            result[f"{label}_sampled_ratio"] = round(rate["sampled"] / rate["bare"], 4)
            result["latency_sample"] = SAMPLED_LATENCY
        result["records_lost"] += lost
    return result


def render(r: dict) -> str:
    """The figures as a short table: throughput ratios to bare, and what the probes saw.

    >>> print(render({"syscall_bare_ops_per_s": 1000, "syscall_floor_ratio": 0.5,
    ...   "syscall_sysfloor_ratio": 0.6, "syscall_throughput_ratio": 0.4,
    ...   "syscall_sampled_ratio": 0.45, "latency_sample": 16,
    ...   "syscall_events_per_s": 800, "syscall_records": 9, "syscall_records_lost": 0}))
    workload     bare ops/s sysfloor   floor  probed  sampled   events/s  records  lost
    syscall           1,000    0.600   0.500   0.400    0.450        800        9     0
    sysfloor: empty programs on raw_syscalls sys_enter/sys_exit; floor: on all the probes'
    attach points; sampled: syscall latency 1 in 16
    """
    lines = [
        f"{'workload':<10} {'bare ops/s':>12} {'sysfloor':>8} {'floor':>7} {'probed':>7} "
        f"{'sampled':>8} {'events/s':>10} {'records':>8} {'lost':>5}"
    ]
    for _kind, label in WORKLOADS:
        if label + "_bare_ops_per_s" not in r:
            continue
        sampled = r.get(label + "_sampled_ratio")
        lines.append(
            f"{label:<10} {r[label + '_bare_ops_per_s']:>12,} "
            f"{r[label + '_sysfloor_ratio']:>8.3f} {r[label + '_floor_ratio']:>7.3f} "
            f"{r[label + '_throughput_ratio']:>7.3f} "
            f"{'-' if sampled is None else format(sampled, '.3f'):>8} "
            f"{r[label + '_events_per_s']:>10,} "
            f"{r[label + '_records']:>8} {r[label + '_records_lost']:>5}"
        )
    lines.append(
        "sysfloor: empty programs on raw_syscalls sys_enter/sys_exit; floor: on all the probes'"
    )
    lines.append(
        f"attach points; sampled: syscall latency 1 in {r.get('latency_sample', SAMPLED_LATENCY)}"
    )
    return "\n".join(lines)


def progress_line(msg: str) -> None:
    """Show progress on one terminal line (plain lines when stderr is not a terminal)."""
    if sys.stderr.isatty():
        print(f"\r{msg:<60}", end="", file=sys.stderr, flush=True)
    else:
        print(msg, file=sys.stderr, flush=True)
