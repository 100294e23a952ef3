"""Nanoseconds per event at each attach point: what a probe's program costs per run against an
empty program on the same attach point, as the kernel's run-time statistics count them
(:mod:`tuner.bpfstats`).

The throughput arms of ``tuner bench overhead`` give the total a workload pays; these figures
split it by attach point, so the program to work on is the one with the most nanoseconds
added per operation. The statistics' own clock reads are in both the probe's and the empty
program's figure, so the difference is the probe's work.

>>> from tuner.bpfstats import RunStats
>>> rows = per_event({"sched_switch": RunStats(2000, 400_000)},
...                  {"sched_switch": RunStats(1000, 40_000)}, ops=1000)
>>> r = rows[0]
>>> r.attach, r.per_op, r.probe_ns, r.empty_ns, r.added_ns, r.added_per_op_ns
('sched_switch', 2.0, 200.0, 40.0, 160.0, 320.0)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from tuner.bpfstats import RunStats, prog_stats


@dataclass(frozen=True)
class PerEvent:
    """One attach point under one workload."""

    attach: str
    per_op: float  # runs of the probe's program per operation of the workload
    probe_ns: float  # ns per run of the probe's program
    empty_ns: float  # ns per run of an empty program there (0: none measured)

    @property
    def added_ns(self) -> float:
        return self.probe_ns - self.empty_ns

    @property
    def added_per_op_ns(self) -> float:
        return self.added_ns * self.per_op

    def to_json(self) -> dict[str, float]:
        return {
            "per_op": round(self.per_op, 3),
            "probe_ns": round(self.probe_ns, 1),
            "empty_ns": round(self.empty_ns, 1),
            "added_ns": round(self.added_ns, 1),
        }


def snapshot(programs: Mapping[str, int]) -> dict[str, RunStats]:
    """The run statistics of each program (attach point -> fd) now."""
    return {attach: prog_stats(fd) for attach, fd in programs.items()}


@contextlib.contextmanager
def counted(programs: Mapping[str, int]) -> Iterator[dict[str, RunStats]]:
    """Yield a dict that, when the block ends, holds each program's runs during the block
    (with the statistics on, :func:`tuner.bpfstats.enabled`)."""
    before = snapshot(programs)
    out: dict[str, RunStats] = {}
    yield out
    out.update({k: v - before[k] for k, v in snapshot(programs).items() if k in before})


def per_event(
    probe: Mapping[str, RunStats], empty: Mapping[str, RunStats], ops: float
) -> list[PerEvent]:
    """Per attach point: the probe's runs per operation and ns per run over a run of ``ops``
    operations (``probe``: its statistics' change over the run), beside the empty program's
    ns per run (``empty``: its change over a run of the same workload); dearest per
    operation first. Attach points the workload never reached are left out."""
    rows = [
        PerEvent(a, s.runs / ops, s.ns_per_run, empty[a].ns_per_run if a in empty else 0.0)
        for a, s in probe.items()
        if s.runs and ops > 0
    ]
    return sorted(rows, key=lambda r: -r.added_per_op_ns)


def render(by_workload: Mapping[str, list[PerEvent]]) -> list[str]:
    """The table ``tuner bench overhead`` prints.

    >>> print("\\n".join(render({"syscall": [PerEvent("sys_exit", 1.0, 90.0, 40.0)]})))
    ns per event by attach point (kernel run-time statistics):
    workload   attach point             events/op  probe ns  empty ns   added  added/op
    syscall    sys_exit                      1.00      90.0      40.0    50.0      50.0
    """
    lines = [
        "ns per event by attach point (kernel run-time statistics):",
        f"{'workload':<10} {'attach point':<24} events/op  probe ns  empty ns   added  added/op",
    ]
    for label, rows in by_workload.items():
        for r in rows:
            if r.per_op < 0.005:  # a first sight's decisions, not a cost per operation
                continue
            lines.append(
                f"{label:<10} {r.attach:<24} {r.per_op:9.2f} {r.probe_ns:9.1f} "
                f"{r.empty_ns:9.1f} {r.added_ns:7.1f} {r.added_per_op_ns:9.1f}"
            )
    return lines
