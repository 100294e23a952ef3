"""``tuner bench overhead``: what the probes cost the workload they observe.

For a syscall-heavy and a context-switch-heavy workload, runs each without probes and with all
probes attached and observing it, alternating the two so that drifts in machine load hit both
alike, and reports the throughput ratio (with / without), the raw events per second the BPF
side saw, summary records delivered and records lost.

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


def run_workload(binary: Path, kind: str, seconds: float, probed: bool) -> Run:
    """One run of a workload, bare or with every probe observing it (by command name)."""
    if not probed:
        out = subprocess.run(
            [str(binary), kind, str(seconds)], capture_output=True, text=True, check=True
        ).stdout
        ops, elapsed = out.split()
        return Run(int(ops) / float(elapsed), seconds=float(elapsed))
    cfg = ProbeConfig(window_ms=100, comm=WORKLOAD_COMM)
    with FeatureStream(cfg) as stream:
        before = stream.stats()
        proc = subprocess.Popen(
            [str(binary), kind, str(seconds)], stdout=subprocess.PIPE, text=True
        )
        for _ in stream.windows():
            if proc.poll() is not None:
                break
        out = proc.communicate()[0]
        for _ in range(2):  # let the last windows close and drain
            next(stream.windows())
        after = stream.stats()
    ops, elapsed = out.split()
    d = {
        k: (
            after[k].events - before[k].events,
            after[k].records - before[k].records,
            after[k].lost - before[k].lost,
        )
        for k in after
    }
    return Run(
        int(ops) / float(elapsed),
        sum(v[0] for v in d.values()),
        sum(v[1] for v in d.values()),
        sum(v[2] for v in d.values()),
        float(elapsed),
    )


def run(seconds: float = 2.0, rounds: int = 3, progress=None) -> dict:
    """Measure both workloads; return the figures as a dict (see ``--json``)."""
    if seconds <= 0 or rounds < 1:
        raise TunerError(f"--seconds must be > 0 and --rounds >= 1 (got {seconds}, {rounds})")
    binary = build_workload()
    result: dict = {"seconds": seconds, "rounds": rounds, "records_lost": 0}
    for kind, label in (("sys", "syscall"), ("ctx", "ctxswitch")):
        bare, probed = [], []
        for r in range(rounds):
            for is_probed in (False, True) if r % 2 == 0 else (True, False):
                if progress:
                    progress(
                        f"{label}: round {r + 1}/{rounds}, {'with probes' if is_probed else 'bare'}"
                    )
                (probed if is_probed else bare).append(
                    run_workload(binary, kind, seconds, is_probed)
                )
        ratio = median([p.ops_per_s for p in probed]) / median([b.ops_per_s for b in bare])
        lost = sum(p.lost for p in probed)
        result.update(
            {
                f"{label}_throughput_ratio": round(ratio, 4),
                f"{label}_bare_ops_per_s": round(median([b.ops_per_s for b in bare])),
                f"{label}_probed_ops_per_s": round(median([p.ops_per_s for p in probed])),
                f"{label}_events_per_s": round(median([p.events / p.seconds for p in probed])),
                f"{label}_records": sum(p.records for p in probed),
                f"{label}_records_lost": lost,
            }
        )
        result["records_lost"] += lost
    return result


def render(r: dict) -> str:
    """The figures as a short table."""
    lines = [
        f"{'workload':<10} {'bare ops/s':>12} {'probed ops/s':>13} {'ratio':>7} "
        f"{'events/s':>10} {'records':>8} {'lost':>5}"
    ]
    for label in ("syscall", "ctxswitch"):
        lines.append(
            f"{label:<10} {r[label + '_bare_ops_per_s']:>12,} "
            f"{r[label + '_probed_ops_per_s']:>13,} "
            f"{r[label + '_throughput_ratio']:>7.3f} {r[label + '_events_per_s']:>10,} "
            f"{r[label + '_records']:>8} {r[label + '_records_lost']:>5}"
        )
    return "\n".join(lines)


def progress_line(msg: str) -> None:
    """Show progress on one terminal line (plain lines when stderr is not a terminal)."""
    if sys.stderr.isatty():
        print(f"\r{msg:<60}", end="", file=sys.stderr, flush=True)
    else:
        print(msg, file=sys.stderr, flush=True)
