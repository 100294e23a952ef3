"""The agent: every window, features -> learner -> policy -> actuator, in shadow or active mode.

::

    sched probe ──frames──> loads per worker ──> Learner.step ──predictions──> SharePolicy
         ^                                         (learn, score,               │ table
         │ kernel                                   predict)                    v
    reuseport group <──── apply (active) / record only (shadow) ──── ReuseportSteering
                                                                       │ lease renewed
    decision log (JSON lines) <── every window: mode, predictions, table, why, scores

One window of the loop (:meth:`Agent.step`):

1. Loads per worker from the scheduler probe: ``(on-CPU + run-queue wait) / window``; and,
   for the CPUs that workers are pinned to, loads per CPU (every task's on-CPU time plus the
   workers' run-queue wait, per window).
2. The learner scores last window's predictions, learns, and predicts the next window (a
   second learner of the same kind does the same for the CPUs).
3. Fall back to kernel defaults (the lease is ended) while the features are stale, the model
   is warming up, or its recent error is worse than the last-value baseline's.
4. Otherwise the policy picks a table: shares in proportion to predicted spare capacity,
   counted per CPU for pinned workers (two workers on one busy CPU share its little room).
   Active: it is written and the lease renewed. Shadow: it is only logged, and scored one
   window later against the load that occurred.
5. The regression guard compares the hottest worker's load with its level during the last
   shadow period; too much worse for too long, and the agent goes back to shadow by itself.

The scheduling state lives in :class:`Agent`; :mod:`tuner.agent.control` reads and changes
it (``tuner status``, ``tuner mode``) from another thread.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, TextIO

from tuner.agent.config import AgentConfig
from tuner.agent.sockets import SocketTable
from tuner.errors import TunerError
from tuner.learn.online import Learner, Prediction
from tuner.policy.flows import HotFlowPolicy
from tuner.policy.shares import SharePolicy, TableDecision, cpu_spare, distance, table_for
from tuner.probes.base import Frame

MODES = ("shadow", "active")
STALE_WINDOWS = 3


def _load_model(config: AgentConfig) -> Any:
    """The learner's load model: a saved offline model when ``model.path`` is set (checked
    against this agent's features and window), else a fresh one of ``model.kind``."""
    path = config.get("model.path")
    if not path:
        return config.get("model.kind")
    from tuner.learn.modelfile import load_model
    from tuner.learn.offline import OfflineModel

    saved = load_model(path)
    saved.check(config.get("agent.window_ms"))
    return OfflineModel.from_saved(saved)


def worker_loads(
    frames: list[Frame], pids: list[int], groups: list[int] | None = None
) -> dict[int, dict[str, float]]:
    """Per worker index: ``load`` and ``runq_frac`` (fractions of the window) from the
    scheduler probe's task frames. A worker without frames was idle: load 0. With ``groups``
    (the entity index of each pid: a backend host runs several) the pids of an entity add up.

    >>> x = {"oncpu_ns": 40.0, "runq_wait_ns": 10.0}
    >>> f = Frame("sched", "task:7", 0, 100, x, {"tgid": "7"})
    >>> worker_loads([f], [7, 8])
    {0: {'load': 0.5, 'runq_frac': 0.1}, 1: {'load': 0.0, 'runq_frac': 0.0}}
    >>> worker_loads([f, Frame("sched", "task:8", 0, 100, x, {"tgid": "8"})], [7, 8], [0, 0])
    {0: {'load': 1.0, 'runq_frac': 0.2}}
    """
    groups = list(range(len(pids))) if groups is None else groups
    index = dict(zip(pids, groups, strict=True))
    n = max(groups, default=-1) + 1
    busy = [0.0] * n
    wait = [0.0] * n
    span: dict[int, tuple[int, int]] = {}
    for f in frames:
        if f.probe != "sched" or not f.entity.startswith("task:"):
            continue
        i = index.get(int(f.labels.get("tgid", 0)))
        if i is None:
            continue
        busy[i] += f.features.get("oncpu_ns", 0.0) + f.features.get("runq_wait_ns", 0.0)
        wait[i] += f.features.get("runq_wait_ns", 0.0)
        lo, hi = span.get(i, (f.window_start, f.window_end))
        span[i] = (min(lo, f.window_start), max(hi, f.window_end))
    out = {}
    for i in range(n):
        lo, hi = span.get(i, (0, 1))
        length = max(hi - lo, 1)
        out[i] = {"load": busy[i] / length, "runq_frac": wait[i] / length}
    return out


def worker_cpus(pids: list[int], groups: list[int] | None = None) -> list[int | None]:
    """The one CPU each worker is pinned to, or None for a worker allowed on several. With
    ``groups`` (see :func:`worker_loads`): per entity, the one CPU all its pids are pinned to.

    >>> worker_cpus([os.getpid()]) in ([None], [sorted(os.sched_getaffinity(0))[0]])
    True
    """
    groups = list(range(len(pids))) if groups is None else groups
    pinned: dict[int, set[int | None]] = {}  # per entity: its pids' one CPUs (None: several)
    for pid, g in zip(pids, groups, strict=True):
        try:
            allowed = os.sched_getaffinity(pid)
        except OSError:
            allowed = set()
        pinned.setdefault(g, set()).add(next(iter(allowed)) if len(allowed) == 1 else None)
    n = max(groups, default=-1) + 1
    return [next(iter(pinned[g])) if len(pinned.get(g, ())) == 1 else None for g in range(n)]


def cpu_loads(frames: list[Frame], cpus: list[int]) -> dict[str, float]:
    """Per CPU of ``cpus``, ``cpu:<n>``: (on-CPU time of every task + run-queue wait of the
    observed ones) / window, from the scheduler probe's CPU frames. No frame: idle, 0.

    >>> x = {"oncpu_ns": 60.0, "runq_wait_ns": 30.0}
    >>> cpu_loads([Frame("sched", "cpu:1", 0, 100, x, {})], [0, 1])
    {'cpu:0': 0.0, 'cpu:1': 0.9}
    """
    out = {f"cpu:{c}": 0.0 for c in cpus}
    for f in frames:
        if f.probe == "sched" and f.entity in out:
            busy = f.features.get("oncpu_ns", 0.0) + f.features.get("runq_wait_ns", 0.0)
            out[f.entity] += busy / max(f.window_end - f.window_start, 1)
    return out


@dataclass
class Guard:
    """Regression guard: trips after ``windows`` consecutive active windows whose pressure
    is above the shadow level times ``1 + margin``.

    >>> g = Guard(margin=0.5, windows=2)
    >>> [g.observe("shadow", p) for p in (0.4, 0.4)]
    [False, False]
    >>> [g.observe("active", p) for p in (0.7, 0.7)]
    [False, True]
    """

    margin: float = 0.25
    windows: int = 10
    enabled: bool = True

    def __post_init__(self) -> None:
        self.shadow_level: deque = deque(maxlen=200)
        self.worse = 0
        self.reason = ""

    def observe(self, mode: str, pressure: float) -> bool:
        """Feed one window; True when the guard trips (active mode only)."""
        if mode == "shadow":
            self.shadow_level.append(pressure)
            self.worse = 0
            return False
        if not self.enabled or len(self.shadow_level) < 2:
            return False
        level = sum(self.shadow_level) / len(self.shadow_level)
        if pressure > level * (1 + self.margin) + 1e-9:
            self.worse += 1
        else:
            self.worse = 0
        if self.worse >= self.windows:
            self.reason = (
                f"hottest worker load {pressure:.2f} above shadow level {level:.2f} "
                f"+{self.margin:.0%} for {self.worse} windows"
            )
            self.worse = 0
            return True
        return False


class Agent:
    """Holds the loop's state; :meth:`step` runs one window against an actuator.

    ``steering`` is anything with ``apply(table)``, ``renew()``, ``expire()`` and
    ``set_mode(mode)`` (:class:`~tuner.actuate.reuseport.ReuseportSteering`). With
    ``xdp.interface`` configured, :meth:`step` also takes an ``xdp`` steering
    (:class:`~tuner.actuate.xdp.XdpSteering` over ``xdp.cpus``): each window a third learner
    predicts those CPUs' loads, and new flows are spread over them by predicted spare room.
    """

    def __init__(
        self,
        config: AgentConfig,
        pids: list[int],
        mode: str = "shadow",
        worker_cpu: list[int | None] | None = None,
        groups: list[int] | None = None,
    ) -> None:
        if mode not in MODES:
            raise TunerError(f"mode must be shadow or active; got {mode!r}")
        self.config = config
        self.pids = list(pids)
        # the entity of each pid: its own (workers of a reuseport group), or its backend host's
        self.groups = list(range(len(self.pids))) if groups is None else list(groups)
        self.kind = "backend" if config.get("backends.namespaces") else "worker"
        self.entities = [f"{self.kind}:{i}" for i in range(max(self.groups, default=-1) + 1)]
        self.mode = mode
        self.started = time.time()
        self.learner = Learner(_load_model(config), config.get("model.hot_threshold"))
        # pinned workers: their CPUs are entities too, and spare room is counted per CPU
        # (``worker_cpu`` given: a replay, with the CPUs the recording saw; a recording
        # writes this list into the trace)
        self.worker_cpu = list(
            worker_cpus(self.pids, self.groups) if worker_cpu is None else worker_cpu
        )
        pinned = {c for c in self.worker_cpu if c is not None}
        self.cpus = sorted(pinned) if config.get("policy.by_cpu") else []
        self.cpu_learner = self._side_learner(bool(self.cpus))
        # agent.sockets: the workers' TCP connections are entities too (tuner.agent.sockets)
        on = bool(config.get("agent.sockets"))
        self.sockets = SocketTable(self.pids, self.groups) if on else None
        self.sock_learner = self._side_learner(on)
        self.policy = self._share_policy()
        self.policy.check(len(self.entities))
        # XDP: new flows spread over these CPUs (entities cpu:<n>) by their predicted spare room
        xdp_on = bool(config.get("xdp.interface"))
        self.xdp_cpus = (
            (list(config.get("xdp.cpus")) or list(range(os.cpu_count() or 1))) if xdp_on else []
        )
        self.xdp_learner = self._side_learner(bool(self.xdp_cpus))
        self.xdp_policy = self._share_policy()
        if self.xdp_cpus:
            self.xdp_policy.check(len(self.xdp_cpus))
        self.flow_policy = HotFlowPolicy(
            share=config.get("policy.hot_flow_share"),
            hold_windows=config.get("policy.hot_flow_hold"),
            margin=0.1 * config.get("policy.capacity"),
        )
        self.guard = Guard(
            config.get("guard.margin"), config.get("guard.windows"), config.get("guard.enabled")
        )
        self.lock = threading.Lock()
        self.windows = 0
        self.stale = 0
        self.last: dict[str, Any] = {}
        self.latency_ms: deque = deque(maxlen=1000)
        self.shadow_scores = {"decisions": 0, "hot_tp": 0, "hot_fp": 0, "hot_fn": 0, "gap": 0.0}
        self._prev: tuple[dict[str, Prediction], TableDecision | None] | None = None
        self._log: TextIO | None = None
        self._steering: Any = None
        self._xdp: Any = None
        self.records_lost = 0
        self.decisions_written = 0
        self.predictions: dict[str, list[float]] = {}
        # True while the kernel holds the policy's current table under a live lease. After
        # shadow, a fallback or start-up it is False, and the first active window writes the
        # table even when the policy sees no change (its shares moved on while nothing was
        # written), so `tuner mode active` always takes effect in the next window.
        self._holding = False
        self._xdp_holding = False

    def _side_learner(self, wanted: bool) -> Learner | None:
        """A learner of ``model.kind`` for CPU or socket entities, or None when not wanted."""
        c = self.config
        return Learner(c.get("model.kind"), c.get("model.hot_threshold")) if wanted else None

    def _share_policy(self) -> SharePolicy:
        c = self.config
        return SharePolicy(
            capacity=c.get("policy.capacity"),
            min_share=c.get("policy.min_share"),
            max_step=c.get("policy.max_step"),
            hysteresis=c.get("policy.hysteresis"),
            fill=c.get("policy.fill"),
        )

    # -- control --------------------------------------------------------------------------
    def set_mode(self, mode: str, why: str = "requested") -> None:
        """Switch mode now. To shadow: no more writes, the lease is left to lapse."""
        if mode not in MODES:
            raise TunerError(f"mode must be shadow or active; got {mode!r}")
        with self.lock:
            if mode != self.mode:
                self.mode = mode
                self._holding = self._xdp_holding = False
                for steering in (self._steering, self._xdp):
                    if steering is not None:
                        steering.set_mode(mode)
                self._write_log({"t": time.time(), "event": "mode", "mode": mode, "why": why})

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Answer a control request (see :mod:`tuner.agent.control`)."""
        if msg["cmd"] == "mode":
            self.set_mode(str(msg.get("mode")), why="tuner mode")
            return {"mode": self.mode}
        if msg["cmd"] == "status":
            return self.status()
        raise TunerError(f"unknown command {msg['cmd']!r}", "use status or mode")

    def status(self) -> dict[str, Any]:
        """Mode, uptime, entities, last decision, model vs baseline error, loop latency."""
        lat = sorted(self.latency_ms)
        model_mae, base_mae = self.learner.recent_mae()
        s = self.shadow_scores
        decided = max(1, s["decisions"])
        with self.lock:
            return {
                "mode": self.mode,
                "uptime_s": round(time.time() - self.started, 1),
                "windows": self.windows,
                "entities": len(self.entities),
                "pids": self.pids,
                "sockets": len(self.sockets.live) if self.sockets is not None else None,
                "last_decision": self.last,
                "model": self.config.model_name(),
                "model_mae_recent": round(model_mae, 4),
                "baseline_mae_recent": round(base_mae, 4),
                "scores": {k: round(v, 4) for k, v in self.learner.scores().items()},
                "shadow": {
                    "decisions": s["decisions"],
                    "hotspot_precision": _ratio(s["hot_tp"], s["hot_tp"] + s["hot_fp"]),
                    "hotspot_recall": _ratio(s["hot_tp"], s["hot_tp"] + s["hot_fn"]),
                    "mean_gap_to_balanced": round(s["gap"] / decided, 4),
                },
                "guard": self._guard_text(),
                "records_lost": self.records_lost,
                "cpu_s": round(sum(os.times()[:2]), 3),
                "loop_ms_p50": round(lat[len(lat) // 2], 3) if lat else None,
                "loop_ms_p99": round(lat[int(len(lat) * 0.99)], 3) if lat else None,
            }

    def _guard_text(self) -> str:
        if not self.guard.enabled:
            return "disabled"
        if self.guard.reason:
            return self.guard.reason
        return "armed" if self.guard.shadow_level else "no shadow period yet"

    # -- the loop -------------------------------------------------------------------------
    def open_log(self, path: str) -> None:
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._log = open(path, "a", buffering=1)  # noqa: SIM115 - closed in close_log

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _write_log(self, entry: dict[str, Any]) -> None:
        if self._log is not None:
            self._log.write(json.dumps(_rounded(entry)) + "\n")

    def step(
        self, frames: list[Frame], steering: Any, closed_ns: int | None = None, xdp: Any = None
    ) -> dict:
        """One window: learn, predict, decide, act; returns the decision log entry.

        ``closed_ns`` (CLOCK_MONOTONIC) is when the window was closed: the loop latency is
        measured from there to the table written. ``xdp``: the XDP steering over
        :attr:`xdp_cpus`, when configured."""
        self._steering, self._xdp = steering, xdp
        measured = worker_loads(frames, self.pids, self.groups)
        entities = self.entities
        loads = {e: measured[i]["load"] for i, e in enumerate(entities)}
        extra = {e: {"runq_frac": measured[i]["runq_frac"]} for i, e in enumerate(entities)}
        seen = None
        if self.sockets is not None and self.sock_learner is not None:
            sw = self.sockets.update(frames, {i: m["load"] for i, m in measured.items()})
            for i, e in enumerate(entities):
                extra[e]["live_load"] = sw.live_load[i]
            preds = self.sock_learner.step(sw.loads) if sw.loads else {}
            seen = {"closed": len(sw.closed), "predictions": preds}
        self.stale = self.stale + 1 if not frames else 0
        flow_hits = getattr(steering, "flow_hits", None)
        hits = flow_hits() if flow_hits is not None and self.flow_policy.enabled else None
        cpus = cpu_loads(frames, self.cpus) if self.cpus else None
        xdp_loads = cpu_loads(frames, self.xdp_cpus) if xdp is not None else None
        return self.step_loads(loads, extra, steering, closed_ns, hits, cpus, xdp, xdp_loads, seen)

    def step_loads(
        self,
        loads: dict[str, float],
        extra: dict[str, dict[str, float]],
        steering: Any,
        closed_ns: int | None = None,
        hits: dict[int, int] | None = None,
        cpus: dict[str, float] | None = None,
        xdp: Any = None,
        xdp_loads: dict[str, float] | None = None,
        sockets: dict[str, Any] | None = None,
    ) -> dict:
        """The part of :meth:`step` after the probes: ``tuner replay`` enters here with a
        trace's loads, so a replay runs the same learner and policy code as the live loop.
        ``hits`` (datagrams per flow hash, UDP groups) lets the hot-flow policy pin flows;
        ``cpus`` (load per ``cpu:<n>`` of pinned workers) counts spare room per CPU; ``xdp``
        and ``xdp_loads`` (load per ``cpu:<n>`` of :attr:`xdp_cpus`) drive the XDP steering.
        ``sockets`` (``closed``: connections closed this window, ``predictions``: the socket
        learner's) is summarized in the log entry."""
        entities = list(loads)
        shares_now = self.policy.shares_ or [1.0 / len(entities)] * len(entities)
        self._score_shadow(loads)
        preds = self.learner.step(loads, extra, dict(zip(entities, shares_now, strict=False)))
        cpu_preds = self.cpu_learner.step(cpus) if cpus and self.cpu_learner is not None else {}
        xdp_preds = (
            self.xdp_learner.step(xdp_loads) if xdp_loads and self.xdp_learner is not None else {}
        )
        self.windows += 1
        pressure = max(loads.values())
        if self.guard.observe(self.mode, pressure):
            self.set_mode("shadow", why=f"regression guard: {self.guard.reason}")
        model_mae, base_mae = self.learner.recent_mae()
        fallback = ""
        if self.stale >= STALE_WINDOWS:
            fallback = f"no features for {self.stale} windows"
        elif self.learner.windows_ < self.config.get("model.warmup_windows"):
            fallback = f"model warming up ({self.learner.windows_} windows)"
        elif self.learner.windows_ > 50 and model_mae > base_mae * 1.05:
            fallback = f"model error {model_mae:.3f} worse than baseline {base_mae:.3f}"
        decision = None
        entry: dict[str, Any] = {"t": time.time(), "window": self.windows}
        with self.lock:
            mode = self.mode
            if fallback:
                for st in (steering, xdp):
                    if mode == "active" and st is not None:
                        st.expire()
                self._holding = self._xdp_holding = False
                self.policy.reset()
                self.xdp_policy.reset()
                self.flow_policy.reset()
                entry.update(mode=mode, written=False, fallback=fallback)
            else:
                predicted = [preds[e].load for e in entities]
                spare = None
                if cpu_preds:
                    by_cpu = {int(e.split(":")[1]): p.load for e, p in cpu_preds.items()}
                    spare = cpu_spare(predicted, self.worker_cpu, by_cpu, self.policy.capacity)
                decision = self._decide(predicted, spare)
                written, self._holding = self._act(steering, decision, mode, self._holding)
                entry.update(
                    mode=mode,
                    written=written,
                    changed=decision.changed,
                    shares=list(decision.shares),
                    table=decision.table if decision.changed else None,
                    why=decision.why,
                )
                if hits:
                    flows = self.flow_policy.decide(hits, decision.table, predicted)
                    steering.set_overrides(flows.overrides)
                    entry.update(
                        hot_flows=len(flows.hot),
                        overrides={str(h): t for h, t in flows.overrides.items()},
                        flows_why=flows.why,
                    )
                if xdp is not None and xdp_preds:
                    entry["xdp"] = self._step_xdp(xdp, xdp_preds, mode)
        if closed_ns is not None:
            ms = (time.monotonic_ns() - closed_ns) / 1e6
            self.latency_ms.append(ms)
            entry["loop_ms"] = round(ms, 3)
        # full precision here (a trace keeps it, so a replay reproduces the run exactly);
        # the decision log rounds (see _write_log)
        entry["loads"] = dict(loads)
        entry["features"] = {e: dict(x) for e, x in extra.items()}
        entry["in_force"] = list(shares_now)
        entry["predictions"] = {e: [p.load, p.baseline, p.p_hot] for e, p in preds.items()}
        if cpus:
            entry["cpu_loads"] = dict(cpus)
            entry["cpu_predictions"] = {e: [p.load, p.baseline] for e, p in cpu_preds.items()}
        if xdp_loads:
            entry["xdp_loads"] = dict(xdp_loads)
            entry["xdp_predictions"] = {e: [p.load, p.baseline] for e, p in xdp_preds.items()}
        if sockets is not None:
            entry["sockets"] = _socket_summary(sockets["predictions"], sockets["closed"])
        self._prev = (preds, decision)
        self.predictions = entry["predictions"]  # for the metrics endpoint
        self.last = {k: entry[k] for k in ("t", "mode", "written") if k in entry}
        self.last["why"] = entry.get("fallback") or entry.get("why", "")
        self._write_log(entry)
        return entry

    def _act(
        self, steering: Any, decision: TableDecision, mode: str, holding: bool
    ) -> tuple[bool, bool]:
        """Write the decision's table when it changed (or when active mode does not hold it
        yet), else renew the lease; returns (written, holding)."""
        write = decision.changed or (mode == "active" and not holding)
        d = steering.apply(decision.table) if write else None
        self.decisions_written += bool(d and d.written)
        if d is not None and d.written:
            holding = True
        elif not write:
            steering.renew()
        return bool(d and d.written) or (mode == "active" and not write), holding

    def _step_xdp(self, xdp: Any, preds: dict[str, Prediction], mode: str) -> dict[str, Any]:
        """Spread new flows over the XDP CPUs by their predicted spare room."""
        decision = self.xdp_policy.decide([preds[f"cpu:{c}"].load for c in self.xdp_cpus])
        written, self._xdp_holding = self._act(xdp, decision, mode, self._xdp_holding)
        return {
            "cpus": list(self.xdp_cpus),
            "written": written,
            "changed": decision.changed,
            "shares": list(decision.shares),
            "why": decision.why,
        }

    def _decide(self, predicted: list[float], spare: list[float] | None = None) -> TableDecision:
        if self.config.get("policy.kind") == "pin-first":
            shares = [1.0] + [0.0] * (len(predicted) - 1)
            return TableDecision(shares, table_for(shares), True, "pin-first policy")
        return self.policy.decide(predicted, spare)

    def _score_shadow(self, loads: dict[str, float]) -> None:
        """Score the previous window's decision against the load that occurred."""
        if self._prev is None or self.mode != "shadow" or self._prev[1] is None:
            return
        preds, decision = self._prev
        thr = self.learner.threshold
        s = self.shadow_scores
        s["decisions"] += 1
        for e, load in loads.items():
            p = preds.get(e)
            if p is None:
                continue
            said, was = p.p_hot > 0.5 or p.load > thr, load > thr
            s["hot_tp"] += said and was
            s["hot_fp"] += said and not was
            s["hot_fn"] += was and not said
        balanced = self.policy.target_shares(list(loads.values()))
        s["gap"] += distance(balanced, decision.shares)


def _socket_summary(preds: dict[str, Prediction], closed: int, top: int = 3) -> dict[str, Any]:
    """The decision log's view of the socket learner: how many connections are followed and
    closed, and the ``top`` predicted hottest with [predicted load, P(hot)].

    >>> p = {f"sock:{i}": Prediction(f"sock:{i}", i / 10, 0.0, 0.0) for i in range(5)}
    >>> _socket_summary(p, closed=1, top=2)
    {'followed': 5, 'closed': 1, 'hottest': {'sock:4': [0.4, 0.0], 'sock:3': [0.3, 0.0]}}
    """
    hottest = sorted(preds.values(), key=lambda p: p.load, reverse=True)[:top]
    return {
        "followed": len(preds),
        "closed": closed,
        "hottest": {p.entity: [p.load, p.p_hot] for p in hottest},
    }


def _rounded(x: Any, digits: int = 4) -> Any:
    """``x`` with every float rounded, for the decision log.

    >>> _rounded({"a": [0.123456, 1], "b": {"c": 2.0000001}})
    {'a': [0.1235, 1], 'b': {'c': 2.0}}
    """
    if isinstance(x, float):
        return round(x, digits)
    if isinstance(x, dict):
        return {k: _rounded(v, digits) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_rounded(v, digits) for v in x]
    return x


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None
