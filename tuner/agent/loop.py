"""The agent: every window, its channels learn, predict, decide and act, in shadow or active.

::

    probes --frames--> channels: measure -> features -> predict -> act --> WindowRecord
                       workers (steered: reuseport group / backends)        │
                       sockets (live_load for workers)                      ├─> decision log
                       cpus    (spare room per CPU for workers)             ├─> trace
                       xdp     (steered: cpumap)                            ├─> metrics
                                                                            └─> status

One window (:meth:`Agent.step`):

1. Each channel measures its entities' loads from the probes' frames (workers: on-CPU time
   plus run-queue wait per window; CPUs: every task's on-CPU time plus the workers' wait).
2. Each channel's learner scores last window's predictions, learns, and predicts the next.
3. The agent falls back to the kernel's placement (every steered channel ends its lease)
   while the features are stale, the workers' model warms up, or its recent error is worse
   than the last-value baseline's.
4. Otherwise each steered channel's policy picks a table. Active: it is written and the
   lease renewed. Shadow: it is only logged, and scored one window later.
5. The regression guard compares the hottest worker's load with its level during the last
   shadow period; too much worse for too long, and the agent goes back to shadow by itself.

The mode and the channels' steering are changed from the control thread (``tuner mode``)
under :attr:`Agent.lock`; :meth:`Agent.snapshot` and :meth:`Agent.status` read under it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tuner.actuate.steering import Placement, check_mode
from tuner.agent.channel import Channel, Measurement, SteeredChannel, Step
from tuner.agent.channels import WorkerChannel
from tuner.agent.config import AgentConfig
from tuner.agent.counters import ProbeCounters
from tuner.agent.decisions import DecisionLog
from tuner.agent.reload import ModelReload
from tuner.agent.scoring import Guard, ShadowScores
from tuner.agent.workers import WorkerMap
from tuner.errors import TunerError
from tuner.learn.clients import ClientScores
from tuner.learn.scores import SkillSummary
from tuner.probes.base import Frame, ProbeStats
from tuner.window import WindowRecord

STALE_WINDOWS = 3


@dataclass(frozen=True)
class Snapshot:
    """What the metrics endpoint renders, read under the agent's lock."""

    windows: int
    decisions_written: int
    records_lost: int
    mode: str
    model_mae: float
    baseline_mae: float
    latency_ms: tuple[float, ...]
    last: WindowRecord | None
    skill: SkillSummary  # the workers' learner's record since the start
    guard_trips: int = 0  # times the regression guard sent the agent back to shadow
    refused: tuple[tuple[str, int], ...] = ()  # (probe, entities refused: no slot free)
    placements: tuple[tuple[str, Placement], ...] = ()  # (steered channel, its kernel side)


class Agent:
    """Runs ``channels`` (the first is the :class:`~tuner.agent.channels.WorkerChannel`)."""

    def __init__(
        self,
        config: AgentConfig,
        channels: Sequence[Channel],
        mode: str = "shadow",
        reload: ModelReload | None = None,
    ):
        if not channels or not isinstance(channels[0], WorkerChannel):
            raise TunerError("an agent's first channel is its workers")
        self.config = config
        self.channels = list(channels)
        self.workers: WorkerChannel = channels[0]
        self.mode = check_mode(mode)
        self.started = time.time()
        self.guard = Guard(
            config.get("guard.margin"), config.get("guard.windows"), config.get("guard.enabled")
        )
        self.shadow = ShadowScores()
        self.lock = threading.Lock()
        self.windows = 0
        self.stale = 0
        self.counters = ProbeCounters(config.get("agent.max_entities"))
        self.latency_ms: deque[float] = deque(maxlen=1000)
        self.last: WindowRecord | None = None
        self.log: DecisionLog | None = None
        self._changes: list[str] = []
        self._hold = ""  # a reason to leave the kernel's placement in force, set from outside
        self.reload = reload  # looks for a new version of a saved model (model.reload_s)

    # -- the loop -------------------------------------------------------------------------
    def step(self, frames: list[Frame], closed_ns: int | None = None) -> WindowRecord:
        """One window from the probes' frames; ``closed_ns`` (CLOCK_MONOTONIC) is when the
        window was closed: the loop latency is measured from there to the table written."""
        measured: dict[str, Measurement] = {}
        for ch in self.channels:
            measured[ch.name] = ch.measure(frames, measured)
        return self.step_measured(measured, fresh=bool(frames), closed_ns=closed_ns)

    def step_measured(
        self, measured: Mapping[str, Measurement], fresh: bool, closed_ns: int | None = None
    ) -> WindowRecord:
        """The part of :meth:`step` after the probes: ``tuner replay`` enters here with a
        trace's measurements (``fresh``: the window had records), so a replay runs the same
        channels as the live loop."""
        self.stale = 0 if fresh else self.stale + 1
        loads = measured["workers"].loads
        if self.mode == "shadow" and self.last is not None:
            learner, policy = self.workers.learner, self.workers.policy
            self.shadow.score(self.last.workers, loads, learner.threshold, policy)
        features = {ch.name: ch.features(measured[ch.name], measured) for ch in self.channels}
        predicted = {
            ch.name: ch.predict(measured[ch.name], features[ch.name]) for ch in self.channels
        }
        self.windows += 1
        if self.reload is not None:
            event = self.reload.poll(self.workers.learner, time.monotonic())
            if event is not None and self.log is not None:
                self.log.event({"t": time.time(), **event})
        if self.guard.observe(self.mode, max(loads.values(), default=0.0)):
            self.set_mode("shadow", why=f"regression guard: {self.guard.reason}")
        fallback = self._fallback()
        with self.lock:
            step = Step(self.mode, fallback, measured, features, predicted)
            channels = tuple(ch.act(step) for ch in self.channels)
            changes, self._changes = tuple(self._changes), []
        loop_ms = None
        if closed_ns is not None:
            loop_ms = (time.monotonic_ns() - closed_ns) / 1e6
        record = WindowRecord(
            self.windows, time.time(), closed_ns or 0, step.mode, fallback, loop_ms, channels,
            changes,
        )  # fmt: skip
        with self.lock:
            if loop_ms is not None:
                self.latency_ms.append(loop_ms)
            self.last = record
        if self.log is not None:
            self.log.write(record)
        return record

    def _fallback(self) -> str:
        """Why the kernel's placement stays in force this window ("": it does not)."""
        learner = self.workers.learner
        if self._hold:
            return self._hold
        if self.stale >= STALE_WINDOWS:
            return f"no features for {self.stale} windows"
        if learner.windows_ < self.config.get("model.warmup_windows"):
            return f"model warming up ({learner.windows_} windows)"
        # a model without skill is no reason to leave the kernel's placement: the learner's
        # prediction is then the last value (tuner.learn.online.Blend), and the policy acts
        # on it as the reactive one does; the regression guard watches what acting does
        return ""

    def hold(self, reason: str) -> None:
        """Leave the kernel's placement in force for ``reason`` ("" lets the agent decide
        again): the worker map is uncertain while a server replaces its workers."""
        self._hold = reason

    def count_probes(self, stats: Mapping[str, ProbeStats]) -> list[str]:
        """Take a reading of the probes' counters (records lost, entities refused); return
        the lines to say, which also go into the next window's changes."""
        with self.lock:
            lines = self.counters.update(stats)
            self._changes.extend(lines)
        return lines

    def retarget(self, workers: WorkerMap, why: str) -> None:
        """Steer to another set of workers from the next window (the server replaced some):
        what was learned of a replaced worker is dropped, and the tables start afresh."""
        with self.lock:
            for ch in self.channels:
                ch.retarget(workers)
            self._changes.append(why)

    # -- control --------------------------------------------------------------------------
    def set_mode(self, mode: str, why: str = "requested") -> None:
        """Switch mode now. To shadow: no more writes, the leases are left to lapse."""
        check_mode(mode)
        with self.lock:
            if mode == self.mode:
                return
            self.mode = mode
            for ch in self.channels:
                ch.set_mode(mode)
        if self.log is not None:
            self.log.event({"t": time.time(), "event": "mode", "mode": mode, "why": why})

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Answer a control request (see :mod:`tuner.agent.control`)."""
        if msg["cmd"] == "mode":
            self.set_mode(str(msg.get("mode")), why="tuner mode")
            return {"mode": self.mode}
        if msg["cmd"] == "status":
            return self.status()
        raise TunerError(f"unknown command {msg['cmd']!r}", "use status or mode")

    def decisions_written(self) -> int:
        """Tables written (or renewed after a switch to active) by the steered channels."""
        return sum(ch.written for ch in self.channels if isinstance(ch, SteeredChannel))

    def placements(self) -> tuple[tuple[str, Placement], ...]:
        """Each steered channel's placement counts since its steering was loaded."""
        return tuple(
            (ch.name, ch.steering.placement())
            for ch in self.channels
            if isinstance(ch, SteeredChannel)
        )

    def snapshot(self) -> Snapshot:
        model_mae, base_mae = self.workers.learner.recent_mae()
        placements = self.placements()  # map reads: outside the lock
        with self.lock:
            return Snapshot(
                self.windows, self.decisions_written(), self.counters.lost, self.mode,
                model_mae, base_mae, tuple(self.latency_ms), self.last,
                self.workers.learner.skill(), self.guard.trips,
                tuple(self.counters.refused.items()), placements,
            )  # fmt: skip

    def status(self) -> dict[str, Any]:
        """Mode, uptime, entities, last decision, model vs baseline error, loop latency."""
        snap = self.snapshot()
        lat = sorted(snap.latency_ms)
        last = snap.last
        sockets = last.channel("sockets") if last is not None else None
        workers = self.workers.workers
        return {
            "mode": snap.mode,
            "uptime_s": round(time.time() - self.started, 1),
            "windows": snap.windows,
            "entities": len(workers.entities),
            "kind": workers.kind,
            "pids": workers.pids(),
            "workers": [e.entity + "=" + _key(e.pid, e.tid) for e in workers.entities],
            "sockets": sockets.sockets.followed if sockets and sockets.sockets else None,
            "clients": _clients(sockets.sockets.clients) if sockets and sockets.sockets else None,
            "last_decision": _last_decision(last),
            "model": self.config.model_name(),
            "model_version": self.reload.current if self.reload else None,
            "model_trial": self.reload.trying if self.reload else None,
            "model_mae_recent": round(snap.model_mae, 4),
            "baseline_mae_recent": round(snap.baseline_mae, 4),
            "scores": {
                k: v if v is None else round(v, 4) for k, v in self.workers.learner.scores().items()
            },  # fmt: skip
            "shadow": self.shadow.summary(),
            "guard": self.guard.text(),
            "records_lost": snap.records_lost,
            "refused": dict(snap.refused),
            "placed": {
                name: {"by_target": list(p.by_target), "kernel": dict(p.kernel)}
                for name, p in snap.placements
            },
            "cpu_s": round(sum(os.times()[:2]), 3),
            "loop_ms_p50": round(lat[len(lat) // 2], 3) if lat else None,
            "loop_ms_p99": round(lat[int(len(lat) * 0.99)], 3) if lat else None,
        }


def _key(pid: int, tid: int | None) -> str:
    return str(pid) if tid is None else f"{pid}/{tid}"


def _clients(c: ClientScores | None) -> dict[str, Any] | None:
    """The client cost model's figures for the status (None: policy.clients is off)."""
    if c is None:
        return None
    r = {
        k: None if v is None else round(v, 6)
        for k, v in (("mae", c.mae), ("baseline_mae", c.baseline_mae))
    }
    return {"followed": c.clients, "heavy": c.heavy, "windows": c.windows, **r}


def _last_decision(r: WindowRecord | None) -> dict[str, Any]:
    if r is None:
        return {}
    o = r.workers.outcome
    return {
        "t": r.t,
        "mode": r.mode,
        "written": o.written if o is not None else False,
        "why": r.fallback or (o.why if o is not None else ""),
    }
