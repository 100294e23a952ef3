"""``tuner replay``: a recorded trace through the live agent's learner and policy, no kernel.

Each recorded window's loads enter :meth:`tuner.agent.loop.Agent.step_loads`, the code the
live loop runs after reading the probes, with an actuator that writes nothing. With the
recorded configuration the replayed predictions match the recorded ones, so a result can be
reproduced and a change of model or policy compared on the same windows.

>>> import tempfile, os
>>> from tuner.learn.train import synthetic_trace
>>> from tuner.trace.reader import read_trace
>>> t = synthetic_trace(os.path.join(tempfile.mkdtemp(), "t.parquet"), windows=120)
>>> r = replay(read_trace(t))
>>> r.windows, r.entities, r.scores["windows"]
(120, 4, 119)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuner.actuate.base import Decision
from tuner.agent.config import SCHEMA, AgentConfig
from tuner.trace.reader import Trace


class NullSteering:
    """An actuator that records nothing and writes nothing (the replay's kernel)."""

    mode = "shadow"

    def set_mode(self, mode: str) -> None:
        self.mode = mode

    def apply(self, table: list[int]) -> Decision:
        return Decision(time.time(), self.mode, list(table), False, 0)

    def renew(self) -> None:
        pass

    def expire(self) -> None:
        pass


@dataclass
class ReplayResult:
    """What the replay predicted and decided, and how it compares with the recording."""

    windows: int
    entities: int
    scores: dict[str, float]
    decisions: int  # windows whose table changed
    predicted: np.ndarray  # windows x entities: predicted next-window load
    shares: np.ndarray  # windows x entities: shares chosen (NaN: no decision)
    max_diff_to_recording: float | None  # largest |replayed - recorded| prediction
    entries: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        scores = {k: round(v, 6) for k, v in self.scores.items() if k != "windows"}
        return {
            "windows": self.windows,
            "scored_windows": self.scores["windows"],
            "entities": self.entities,
            "decisions": self.decisions,
            "max_diff_to_recording": self.max_diff_to_recording,
            **scores,
        }


def config_of(trace: Trace, **changes: Any) -> AgentConfig:
    """The agent configuration a trace was recorded with (defaults for keys it lacks), with
    ``section__key`` changes."""
    recorded = trace.meta.get("agent") or {}
    # a replay writes neither log nor trace, and steers no XDP (a trace holds the workers'
    # CPUs' loads, not those of the XDP CPUs)
    skip = ("agent.decision_log", "agent.record", "xdp.interface")
    values = {k.replace(".", "__"): v for k, v in recorded.items() if k in SCHEMA and k not in skip}
    values["agent__window_ms"] = trace.meta.get("window_ms", 100)
    cfg = AgentConfig.from_dict({}, source=f"the metadata of {trace.path}")
    return cfg.with_values(**{**values, **changes})


def replay(
    trace: Trace,
    config: AgentConfig | None = None,
    keep_entries: bool = False,
) -> ReplayResult:
    """Feed every window of ``trace`` through a fresh shadow-mode agent."""
    from tuner.agent.loop import Agent

    config = config or config_of(trace)
    ents = trace.entities
    pids = trace.meta.get("pids") or list(range(len(ents)))
    if len(pids) != len(ents):
        pids = list(range(len(ents)))
    cpu_col = trace.matrix("cpu")[0]  # a worker's CPU does not change during a recording
    worker_cpu = [int(c) if not math.isnan(c) and c >= 0 else None for c in cpu_col]
    agent = Agent(config, pids, "shadow", worker_cpu=worker_cpu)
    steering = NullSteering()
    cpu_load = trace.matrix("cpu_load")
    loads = np.nan_to_num(trace.matrix("load"), nan=0.0)
    runq = trace.matrix("runq_frac")
    live = trace.matrix("live_load")
    fallback = [v or "" for v in trace.per_window("fallback")]
    n, m = loads.shape
    predicted = np.full((n, m), np.nan)
    shares = np.full((n, m), np.nan)
    entries, decisions = [], 0
    for w in range(n):
        window_loads = {e: float(loads[w, i]) for i, e in enumerate(ents)}
        extra = {e: _extra(runq[w, i], live[w, i]) for i, e in enumerate(ents)}
        if fallback[w].startswith("no features"):
            agent.stale += 1
        else:
            agent.stale = 0
        cpus = {
            f"cpu:{c}": float(cpu_load[w, i])
            for i, c in enumerate(worker_cpu)
            if c is not None and not math.isnan(cpu_load[w, i])
        }
        entry = agent.step_loads(window_loads, extra, steering, cpus=cpus or None)
        predicted[w] = [entry["predictions"][e][0] for e in ents]
        if "shares" in entry:
            shares[w] = entry["shares"]
        decisions += bool(entry.get("changed"))
        if keep_entries:
            entries.append(entry)
    recorded = trace.matrix("pred_load")
    both = ~np.isnan(recorded)
    diff = float(np.abs(predicted[both] - recorded[both]).max()) if both.any() else None
    return ReplayResult(n, m, agent.learner.scores(), decisions, predicted, shares, diff, entries)


def write_log(result: ReplayResult, path: str) -> None:
    """The replayed decisions as JSON lines, in the live agent's decision-log format."""
    with open(path, "w") as f:
        for e in result.entries:
            f.write(json.dumps(e) + "\n")


def _extra(runq: float, live: float) -> dict[str, float]:
    """A trace row's probe features as the live agent gives them: a NaN was not recorded.

    >>> _extra(0.1, float("nan"))
    {'runq_frac': 0.1}
    """
    x = {"runq_frac": float(runq), "live_load": float(live)}
    return {k: v for k, v in x.items() if not math.isnan(v)}
