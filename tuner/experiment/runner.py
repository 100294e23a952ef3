"""Run an experiment: one cluster, then each arm back to back with the same seed.

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

Ctrl-C stops the load generators; what was measured up to then is still written.

An arm whose agent exited before the load ended, or spent more than :data:`FALLBACK_LIMIT`
of its measured windows in fall-back to the kernel's placement, is **failed**: its figures
are not results (the kernel was steering, not the tuner), and the report says why.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tuner.cluster import Cluster, Hosts
from tuner.cluster.netutil import stop_processes
from tuner.cluster.remote import HostLost, SshHosts
from tuner.cluster.topology import VIP
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
from tuner.experiment.spec import ExperimentSpec
from tuner.workload.loadgen import SAMPLE
from tuner.workload.protocol import ServiceTime

ARM_SAMPLE = np.dtype(SAMPLE.descr + [("client", "u1")])  # SAMPLE plus the client host
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


class Runner:
    """Runs ``spec`` with outputs in ``out``; ``progress(arm, fraction, note)`` reports."""

    def __init__(self, spec: ExperimentSpec, out: Path, progress: Any = None) -> None:
        self.spec = spec
        self.out = Path(out)
        self.progress = progress or (lambda *a: None)
        self.rate = spec.get("workload.rate")  # requests/s, all clients together
        self.calibration: Calibration | None = None

    def run(self) -> list[ArmResult]:
        self.out.mkdir(parents=True, exist_ok=True)
        results: list[ArmResult] = []
        with hosts(self.spec) as cluster:
            if self.spec.get("workload.utilization"):
                self.calibration = self._calibrate(cluster)
                self.rate = self.calibration.rate
            for arm in self.spec.arms:
                result = self._arm(cluster, arm)
                results.append(result)
                if result.interrupted:
                    break
        return results

    def _calibrate(self, cluster: Hosts) -> Calibration:
        """What the server sustains here and now: a short run far above it, under the
        kernel's placement, its answers per second counted (see :mod:`.calibrate`)."""
        arm_dir = self.out / "calibration"
        shutil.rmtree(arm_dir, ignore_errors=True)
        arm_dir.mkdir(parents=True)
        self.progress("calibrate", 0.0, "starting server")
        server = servers.start(self.spec, cluster, arm_dir)
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
        """Lower ``c.rate`` until the kernel's placement keeps up with it under the spec's
        own profile (see :mod:`.calibrate`)."""
        mean_us = ServiceTime.parse(self.spec.get("workload.service")).mean_us
        rate, tried = c.rate, []
        for i in range(calibrate.CHECKS):
            tried.append(rate)
            self.progress("calibrate", 1.0, f"checking {rate:.0f} req/s under the profile")
            server = servers.start(self.spec, cluster, arm_dir)
            if calibrate.kept_up(self._kernel_run(cluster, arm_dir, server, rate), mean_us):
                return replace(c, rate=rate, checked=tuple(tried))
            if i + 1 < calibrate.CHECKS:
                rate *= calibrate.STEP
        return replace(c, rate=rate, checked=tuple(tried), sustained=False)

    def _kernel_run(
        self, cluster: Hosts, arm_dir: Path, server: Any, rate: float, profile: str | None = None
    ) -> np.ndarray:
        """Load the started ``server`` (the kernel's placement) for :data:`.calibrate.SECONDS`
        at ``rate``, stop it, and return the samples; Ctrl-C raises KeyboardInterrupt."""
        dirs = {h.name: cluster.arm_dir(h, arm_dir) for h in cluster.by_role("client")}
        try:
            gens, interrupted = self._load(
                cluster, "calibrate", dirs, calibrate.SECONDS, server.http, rate, profile
            )
        finally:
            server.stop()
            lost = _fetch(cluster, dirs, arm_dir)
        if interrupted:
            raise KeyboardInterrupt
        if lost:
            raise HostLost(f"calibration failed: {lost}", "check the hosts and run again")
        return self._collect(arm_dir, len(gens))

    # -- one arm --------------------------------------------------------------------------
    def _arm(self, cluster: Hosts, arm: str) -> ArmResult:
        s = self.spec
        arm_dir = self.out / arm
        if arm_dir.exists():  # an earlier run into the same --out: start the arm afresh
            shutil.rmtree(arm_dir)
        arm_dir.mkdir(parents=True)
        self.progress(arm, 0.0, "starting server")
        agent = hog = server = None
        gens: list[Any] = []
        interrupted = False
        status: dict[str, Any] = {}
        cpu = 0.0
        failed = ""
        started = time.time()
        dirs: dict[str, str] = {}
        try:
            dirs = {h.name: cluster.arm_dir(h, arm_dir) for h in cluster.hosts}
            server = servers.start(s, cluster, arm_dir)
            self.progress(arm, 0.0, "starting agent" if arm in AGENT_ARMS else "")
            agent = start_agent(s, arm, server.pids, server.netns, arm_dir, cluster,
                                dirs["server"])  # fmt: skip
            if s.get("workload.profile") == "noisy-neighbour":
                hog = cluster.start(cluster.host("server"),
                                    ["taskset", "-c", str(s.get("workload.hog_cpu")),
                                     cluster.python, "-c", "while True: pass"])  # fmt: skip
            total = s.get("warmup_s") + s.get("duration_s")
            started = time.time()
            gens, interrupted = self._load(cluster, arm, dirs, total, server.http, self.rate)
            if agent is not None:
                died = agent.poll()
                status, cpu = stop_agent(agent)
                if died is not None and not cluster.lost():
                    failed = (
                        f"the agent exited (status {died}) during the arm: {last_error(arm_dir)}"
                    )
        except HostLost as e:
            failed = e.problem
        finally:
            stop_processes([p for p in (agent, hog) if p is not None] + gens)
            if server is not None:
                server.stop()
            lost = _fetch(cluster, dirs, arm_dir)
            failed = failed or lost
            if arm in AGENT_ARMS:
                remove_agent_traces(arm_dir, cluster)
        samples = self._collect(arm_dir, len(gens))
        decisions = read_jsonl(arm_dir / "decisions.jsonl")
        share = None
        if agent is not None:
            share, why = fallback_share(decisions, started + s.get("warmup_s"))
            if not failed and share > FALLBACK_LIMIT:
                failed = (
                    f"the agent was in fall-back for {share:.0%} of the measured windows "
                    f"(limit {FALLBACK_LIMIT:.0%}): {why}"
                )
        self.progress(arm, 1.0, "FAILED" if failed else "done")
        return ArmResult(arm, samples, started, decisions, status, cpu, interrupted, failed, share)

    def _load(
        self,
        cluster: Hosts,
        label: str,
        dirs: dict[str, str],
        seconds: float,
        http: dict[str, Any] | None,
        rate: float,
        profile: str | None = None,
    ) -> tuple[list[Any], bool]:
        """Run a load generator on every client host for ``seconds`` at ``rate`` requests/s
        in all (samples into the host's folder in ``dirs``); returns them and whether Ctrl-C
        cut it short."""
        service = VIP if cluster.by_role("backend") else cluster.host("server").address
        gens = []
        for i, host in enumerate(cluster.by_role("client")):
            spec = self._load_spec(i, seconds, service, http, rate, profile)
            argv = [cluster.python, "-m", "tuner.workload.loadgen", "--config", json.dumps(spec),
                    "--out", f"{dirs[host.name]}/samples-{i}.npy"]  # fmt: skip
            gens.append(cluster.start(host, argv, lines=True))
        try:
            for line in gens[0].stdout:
                msg = json.loads(line)
                if "t" in msg:
                    self.progress(label, min(msg["t"] / seconds, 1.0), f"{msg['sent']} requests")
            for g in gens:
                g.wait()
        except KeyboardInterrupt:
            for g in gens:
                g.terminate()
            for g in gens:
                g.wait()
            return gens, True
        return gens, False

    def _load_spec(
        self,
        i: int,
        seconds: float,
        host: str,
        http: dict[str, Any] | None,
        rate: float,
        profile: str | None = None,
    ) -> dict[str, Any]:
        s = self.spec
        w = {k.split(".", 1)[1]: v for k, v in s.values.items() if k.startswith("workload.")}
        return {
            "host": host,
            "port": s.get("server.port"),
            "rate": rate / s.get("cluster.clients"),
            "seconds": seconds,
            "connections": w["connections"],
            "profile": profile or w["profile"],
            "service": w["service"],
            "lifetime_s": w["lifetime_s"],
            "seed": s.get("seed") * 1000 + i,
            "udp": s.get("server.protocol") == "udp",
            "http": http,
            "profile_args": {
                k: w[k] for k in ("zipf_s", "shift_s", "period_s", "burst_s", "burst_factor")
            },
        }

    def _collect(self, arm_dir: Path, clients: int) -> np.ndarray:
        """The samples the load generators left in ``arm_dir``, in one array."""
        parts = []
        for i in range(clients):
            path = arm_dir / f"samples-{i}.npy"
            if path.exists():
                x = np.load(path)
                y = np.zeros(x.size, dtype=ARM_SAMPLE)
                for k in SAMPLE.names:
                    y[k] = x[k]
                y["client"] = i
                parts.append(y)
                path.unlink()
        if not parts:
            return np.zeros(0, dtype=ARM_SAMPLE)
        return np.concatenate(parts)


def hosts(spec: ExperimentSpec) -> Hosts:
    """The hosts ``spec`` runs on: SSH hosts when it names them, else a namespace cluster."""
    if not spec.get("cluster.server_host"):
        return Cluster(clients=spec.get("cluster.clients"), backends=spec.get("cluster.backends"))
    return SshHosts(
        server=spec.get("cluster.server_host"),
        clients=list(spec.get("cluster.client_hosts")),
        address=spec.get("cluster.server_address"),
        key=spec.get("cluster.ssh_key"),
        known_hosts=spec.get("cluster.known_hosts"),
        python=spec.get("cluster.python") or sys.executable,
        workdir=spec.get("cluster.workdir"),
    )


def _fetch(cluster: Hosts, dirs: dict[str, str], arm_dir: Path) -> str:
    """Fetch every host's files of an arm into ``arm_dir``, from each host still reachable;
    returns what was lost ("" when nothing)."""
    lost = []
    for name, remote in dirs.items():
        try:
            cluster.collect(cluster.host(name), remote, arm_dir)
        except HostLost as e:
            lost.append(e.problem)
    gone = [n for n in cluster.lost() if not any(n in x for x in lost)]
    lost += [f"host {n} was lost during the arm" for n in gone]
    return "; ".join(lost)
