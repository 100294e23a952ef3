"""``tuner replay``: a recorded trace through the live agent's channels, no kernel needed.

Each recorded window's measurements enter :meth:`tuner.agent.loop.Agent.step_measured`, the
code the live loop runs after reading the probes, with a steering that writes nothing
(:class:`~tuner.actuate.steering.NullSteering`). With the recorded configuration the
replayed predictions match the recorded ones, so a result can be reproduced and a change of
model or policy compared on the same windows.

>>> import tempfile, os
>>> from tuner.offline.train import synthetic_trace
>>> from tuner.trace.reader import read_trace
>>> t = synthetic_trace(os.path.join(tempfile.mkdtemp(), "t.parquet"), windows=120)
>>> r = replay(read_trace(t))
>>> r.windows, r.entities, r.scores["windows"]
(120, 4, 119)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuner.actuate.steering import NullSteering
from tuner.agent.build import build_agent
from tuner.agent.channel import Measurement
from tuner.agent.config import SCHEMA, AgentConfig
from tuner.agent.decisions import line
from tuner.agent.workers import WorkerMap
from tuner.trace.reader import Trace
from tuner.window import WindowRecord


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
    records: list[WindowRecord] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        scores = {k: v if v is None else round(v, 6) for k, v in self.scores.items()
                  if k != "windows"}  # fmt: skip
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
    ``section__key`` changes. A replay writes neither log nor trace, steers no XDP and follows
    no connections: a trace holds the workers' own measurements (``live_load`` among them)."""
    recorded = trace.meta.get("agent") or {}
    skip = ("agent.decision_log", "agent.record", "xdp.interface", "agent.sockets")
    values = {k.replace(".", "__"): v for k, v in recorded.items() if k in SCHEMA and k not in skip}
    values["agent__window_ms"] = trace.meta.get("window_ms", 100)
    cfg = AgentConfig.from_dict({}, source=f"the metadata of {trace.path}")
    return cfg.with_values(**{**values, **changes})


def workers_of(trace: Trace) -> WorkerMap:
    """The workers a trace was recorded for: each entity's pid and pinned CPU, from its first
    row (neither changes during a recording)."""
    pid, cpu = trace.matrix("pid")[0], trace.matrix("cpu")[0]
    kind = trace.entities[0].split(":")[0] if trace.entities else "worker"
    members = [[(int(p) if not math.isnan(p) else -1, None)] for p in pid]
    cpus = [int(c) if not math.isnan(c) and c >= 0 else None for c in cpu]
    return WorkerMap.from_members(members, kind=kind, cpus=cpus)


def replay(trace: Trace, config: AgentConfig | None = None, keep: bool = False) -> ReplayResult:
    """Feed every window of ``trace`` through a fresh shadow-mode agent."""
    config = config or config_of(trace)
    workers = workers_of(trace)
    ents = trace.entities
    min_share = 0.0 if config.get("policy.kind") == "pin-first" else config.get("policy.min_share")
    agent = build_agent(config, workers, NullSteering(len(ents), min_share=min_share))
    pinned = [e.cpu for e in workers.entities]
    cpu_load = trace.matrix("cpu_load")
    loads = np.nan_to_num(trace.matrix("load"), nan=0.0)
    runq, live = trace.matrix("runq_frac"), trace.matrix("live_load")
    fallback = [v or "" for v in trace.per_window("fallback")]
    n, m = loads.shape
    predicted = np.full((n, m), np.nan)
    shares = np.full((n, m), np.nan)
    records, decisions = [], 0
    for w in range(n):
        features = {e: _features(runq[w, i], live[w, i]) for i, e in enumerate(ents)}
        window_loads = dict(zip(ents, loads[w].tolist(), strict=True))
        measured = {"workers": Measurement(window_loads, features)}
        cpus = {
            f"cpu:{c}": float(cpu_load[w, i])
            for i, c in enumerate(pinned)
            if c is not None and not math.isnan(cpu_load[w, i])
        }
        measured["cpus"] = Measurement(cpus, {e: {} for e in cpus})
        record = agent.step_measured(measured, fresh=not fallback[w].startswith("no features"))
        states = {s.entity: s for s in record.workers.entities}
        predicted[w] = [states[e].prediction.load for e in ents]
        outcome = record.workers.outcome
        if outcome is not None and outcome.shares:
            shares[w] = outcome.shares
        decisions += bool(outcome is not None and outcome.changed)
        if keep:
            records.append(record)
    recorded = trace.matrix("pred_load")
    both = ~np.isnan(recorded)
    diff = float(np.abs(predicted[both] - recorded[both]).max()) if both.any() else None
    scores = agent.workers.learner.scores()
    return ReplayResult(n, m, scores, decisions, predicted, shares, diff, records)


def write_log(result: ReplayResult, path: str) -> None:
    """The replayed decisions as JSON lines, in the live agent's decision-log format."""
    with open(path, "wb") as f:
        for r in result.records:
            f.write(line(r))


def _features(runq: float, live: float) -> dict[str, float]:
    """A trace row's probe features as the live agent gives them: a NaN was not recorded.

    >>> _features(0.1, float("nan"))
    {'runq_frac': 0.1}
    """
    x = {"runq_frac": float(runq), "live_load": float(live)}
    return {k: v for k, v in x.items() if not math.isnan(v)}
