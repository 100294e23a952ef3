"""Run an experiment: its groups of hosts, then each arm with the same seed, back to back
or, with several groups, side by side.

For each arm the server (or one on each backend host) is started afresh, the arm's
controller (none, or ``tuner run`` in the right mode and model) is started and given time to
load, then every client host runs a load generator for ``warmup_s + duration_s``. Only
requests sent after the warm-up count.

- ``kernel``: no steering; the kernel's own reuseport hashing (with backend hosts,
  ``cluster.backends``: ECMP routing on the server host, the entry).
- ``reactive``: the agent with the last-value predictor: each window it steers new
  connections away from the workers most loaded in the last window.
- ``shadow``: the agent with the learned model, deciding and logging, writing nothing.
- ``active``: the agent with the learned model, writing its decisions.

With ``cluster.groups = N`` (or N SSH server hosts) the N arms run **at the same time**,
arm *i* of the round's order on group *i*, under the same load (the same seeds); rounds turn
the order, so that over N rounds each arm runs on each group (a fleet A/B: a difference
between hosts cannot pass for a difference between arms, and a drift in time hits both).

Ctrl-C stops the load generators; what was measured up to then is still written.

An arm whose agent exited before the load ended, or spent more than :data:`FALLBACK_LIMIT`
of its measured windows in fall-back to the kernel's placement, or whose host was lost, is
**failed**: its figures are not results, and the report says why.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tuner.cluster import Hosts
from tuner.cluster.netutil import stop_processes
from tuner.cluster.remote import HostLost
from tuner.experiment import calibrate, servers
from tuner.experiment.agents import (
    AGENT_ARMS,
    fallback_share,
    last_error,
    read_jsonl,
    remove_agent_traces,
    start_agent,
    stop_agent,
)
from tuner.experiment.calibrate import Calibration
from tuner.experiment.load import Load, collect, fetch, hosts, run_load
from tuner.experiment.spec import ExperimentSpec
from tuner.workload.protocol import ServiceTime

FALLBACK_LIMIT = 0.1  # share of an agent arm's measured windows it may spend in fall-back


@dataclass
class ArmResult:
    """What one arm produced."""

    arm: str
    samples: np.ndarray  # ARM_SAMPLE rows, t_send from the arm's start
    started: float  # wall time the load started
    decisions: list[dict] = field(default_factory=list)  # the agent's decision log
    agent_status: dict[str, Any] = field(default_factory=dict)
    tuner_cpu_s: float = 0.0
    interrupted: bool = False
    failed: str = ""  # why the arm is not a result ("" when it is one)
    fallback_share: float | None = None  # of the measured windows, agent arms only
    group: int = 0  # the group of hosts it ran on


@dataclass
class _Live:
    """An arm while it runs: what was started for it, to stop and judge after."""

    arm: str
    group: int
    cluster: Hosts
    arm_dir: Path
    dirs: dict[str, str] = field(default_factory=dict)  # host name -> its folder for the arm
    server: Any = None
    agent: Any = None
    hog: Any = None
    load: Load | None = None
    failed: str = ""
    stopped: bool = False


class Runner:
    """Runs ``spec`` with outputs in ``out``; ``progress(arm, fraction, note)`` reports."""

    def __init__(
        self,
        spec: ExperimentSpec,
        out: Path,
        progress: Any = None,
        costs_us: Sequence[float] | None = None,
    ) -> None:
        self.spec = spec
        self.out = Path(out)
        self.progress = progress or (lambda *a: None)
        self.rate = spec.get("workload.rate")  # requests/s, all clients together
        self.calibration: Calibration | None = None
        # what nginx's files cost here (about 2 s to measure): once for every arm, and given
        # by the caller that measured it for an earlier round
        if costs_us is None:
            costs_us = servers.nginx_costs_us() if spec.get("server.kind") == "nginx" else []
        self.costs_us = list(costs_us)

    def run(self) -> list[ArmResult]:
        self.out.mkdir(parents=True, exist_ok=True)
        results: list[ArmResult] = []
        with ExitStack() as stack:
            groups = [stack.enter_context(h) for h in hosts(self.spec)]
            if self.spec.get("workload.utilization"):
                cals = [self._calibrate(g, i, len(groups)) for i, g in enumerate(groups)]
                self.calibration = min(cals, key=lambda c: c.rate)  # one rate for every group
                self.rate = self.calibration.rate
            arms = list(self.spec.arms)
            for k in range(0, len(arms), len(groups)):  # one arm per group at a time
                chunk = arms[k : k + len(groups)]
                batch = self._arms(list(enumerate(zip(groups[: len(chunk)], chunk, strict=True))))
                results += batch
                if any(r.interrupted for r in batch):
                    break
        return results

    def _calibrate(self, cluster: Hosts, group: int, groups: int) -> Calibration:
        """What the server sustains here and now: a short run far above it, under the
        kernel's placement, its answers per second counted (see :mod:`.calibrate`)."""
        arm_dir = self.out / ("calibration" if groups == 1 else f"calibration-{group}")
        shutil.rmtree(arm_dir, ignore_errors=True)
        arm_dir.mkdir(parents=True)
        self.progress("calibrate", 0.0, "starting server")
        server = servers.start(self.spec, cluster, arm_dir, self.costs_us)
        offered = calibrate.offered_rate(self.spec, server.http)
        samples = self._kernel_run(cluster, arm_dir, server, offered, "uniform")
        result = calibrate.from_samples(self.spec, samples, offered)
        # checked under every profile: uniform too, since what a server answers while
        # overloaded can be more than it sustains (nginx: 70 % of it overloaded every arm)
        result = self._check_rate(cluster, arm_dir, result)
        (arm_dir / "calibration.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
        self.progress(
            "calibrate", 1.0, f"capacity {result.capacity:.0f} req/s, rate {result.rate:.0f}"
        )
        return result

    def _check_rate(self, cluster: Hosts, arm_dir: Path, c: Calibration) -> Calibration:
        """The highest rate up to ``c.rate`` that the kernel's placement keeps up with under
        the spec's own profile (see :mod:`.calibrate`)."""
        mean_us = ServiceTime.parse(self.spec.get("workload.service")).mean_us
        checks: list[calibrate.Check] = []
        while (rate := calibrate.next_rate(c.rate, checks)) is not None:
            self.progress("calibrate", 1.0, f"checking {rate:.0f} req/s under the profile")
            server = servers.start(self.spec, cluster, arm_dir, self.costs_us)
            samples = self._kernel_run(cluster, arm_dir, server, rate)
            checks.append(calibrate.check(samples, rate, mean_us))
        limit, sustained = calibrate.chosen(checks)
        share = self.spec.get("workload.of_limit")
        return replace(c, rate=share * limit, checks=tuple(checks), sustained=sustained,
                       limit=limit, of_limit=share)  # fmt: skip

    def _kernel_run(
        self, cluster: Hosts, arm_dir: Path, server: Any, rate: float, profile: str | None = None
    ) -> np.ndarray:
        """Load the started ``server`` (the kernel's placement) for :data:`.calibrate.SECONDS`
        at ``rate``, stop it, and return the samples; Ctrl-C raises KeyboardInterrupt."""
        dirs = {h.name: cluster.arm_dir(h, arm_dir) for h in cluster.by_role("client")}
        load = Load(cluster, dirs, server.http)
        try:
            interrupted = run_load(self.spec, [load], calibrate.SECONDS, rate, self.progress,
                                   "calibrate", profile)  # fmt: skip
        finally:
            server.stop()
            lost = fetch(cluster, dirs, arm_dir)
        if interrupted:
            raise KeyboardInterrupt
        if lost:
            raise HostLost(f"calibration failed: {lost}", "check the hosts and run again")
        return collect(arm_dir, len(load.gens or []))

    # -- arms ---------------------------------------------------------------------------
    def _arms(self, batch: list[tuple[int, tuple[Hosts, str]]]) -> list[ArmResult]:
        """Run the arms of ``batch`` (group, (its hosts, arm)) at the same time."""
        s = self.spec
        lives: list[_Live] = []
        interrupted = False
        started = time.time()
        try:
            for group, (cluster, arm) in batch:
                lives.append(self._start(cluster, arm, group))
            ready = [lv for lv in lives if not lv.failed]
            for lv in ready:
                lv.load = Load(lv.cluster, lv.dirs, lv.server.http)
            started = time.time()
            if ready:
                label = "+".join(lv.arm for lv in ready)
                interrupted = run_load(s, [lv.load for lv in ready],
                                       s.get("warmup_s") + s.get("duration_s"), self.rate,
                                       self.progress, label)  # fmt: skip
        except BaseException:
            for lv in lives:
                self._stop(lv)
            raise
        return [self._finish(lv, started, interrupted) for lv in lives]

    def _start(self, cluster: Hosts, arm: str, group: int) -> _Live:
        """The arm's server, and its agent when it has one; a lost host fails the arm."""
        s = self.spec
        arm_dir = self.out / arm
        if arm_dir.exists():  # an earlier run into the same --out: start the arm afresh
            shutil.rmtree(arm_dir)
        arm_dir.mkdir(parents=True)
        lv = _Live(arm, group, cluster, arm_dir)
        self.progress(arm, 0.0, "starting server")
        try:
            lv.dirs = {h.name: cluster.arm_dir(h, arm_dir) for h in cluster.hosts}
            lv.server = servers.start(s, cluster, arm_dir, self.costs_us)
            self.progress(arm, 0.0, "starting agent" if arm in AGENT_ARMS else "")
            lv.agent = start_agent(s, arm, lv.server.pids, lv.server.netns, arm_dir, cluster,
                                   lv.dirs["server"])  # fmt: skip
            if s.get("workload.profile") == "noisy-neighbour":
                lv.hog = cluster.start(cluster.host("server"),
                                       ["taskset", "-c", str(s.get("workload.hog_cpu")),
                                        cluster.python, "-c", "while True: pass"])  # fmt: skip
        except HostLost as e:
            lv.failed = e.problem
        except BaseException:
            self._stop(lv)
            raise
        return lv

    def _stop(self, lv: _Live) -> None:
        """Stop what runs for the arm, fetch its hosts' files, remove what a dead agent left."""
        if lv.stopped:
            return
        lv.stopped = True
        gens = lv.load.gens if lv.load is not None and lv.load.gens else []
        stop_processes([p for p in (lv.agent, lv.hog) if p is not None] + gens)
        if lv.server is not None:
            lv.server.stop()
        lv.failed = lv.failed or fetch(lv.cluster, lv.dirs, lv.arm_dir)
        if lv.arm in AGENT_ARMS:
            remove_agent_traces(lv.arm_dir, lv.cluster)

    def _finish(self, lv: _Live, started: float, interrupted: bool) -> ArmResult:
        """Stop the arm and judge it: an agent that died or stayed in fall-back fails it."""
        s = self.spec
        status: dict[str, Any] = {}
        cpu = 0.0
        try:
            if lv.agent is not None and not lv.failed:
                died = lv.agent.poll()
                status, cpu = stop_agent(lv.agent)
                if died is not None and not lv.cluster.lost():
                    lv.failed = f"the agent exited (status {died}) during the arm: " + last_error(
                        lv.arm_dir
                    )
        except HostLost as e:
            lv.failed = e.problem
        finally:
            self._stop(lv)
        samples = collect(lv.arm_dir, len(lv.load.gens or []) if lv.load else 0)
        decisions = read_jsonl(lv.arm_dir / "decisions.jsonl")
        share = None
        if lv.agent is not None:
            share, why = fallback_share(decisions, started + s.get("warmup_s"))
            if not lv.failed and share > FALLBACK_LIMIT:
                lv.failed = (
                    f"the agent was in fall-back for {share:.0%} of the measured windows "
                    f"(limit {FALLBACK_LIMIT:.0%}): {why}"
                )
        self.progress(lv.arm, 1.0, "FAILED" if lv.failed else "done")
        return ArmResult(lv.arm, samples, started, decisions, status, cpu, interrupted,
                         lv.failed, share, lv.group)  # fmt: skip
