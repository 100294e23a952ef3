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
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuner.cluster import Cluster
from tuner.cluster.topology import VIP, stop_processes
from tuner.errors import TunerError
from tuner.experiment.spec import ExperimentSpec
from tuner.workload.loadgen import SAMPLE

ARM_SAMPLE = np.dtype(SAMPLE.descr + [("client", "u1")])  # SAMPLE plus the client host
FALLBACK_LIMIT = 0.1  # share of an agent arm's measured windows it may spend in fall-back
AGENT_ARMS = {
    "reactive": ("active", "last"),
    "shadow": ("shadow", None),
    "active": ("active", None),
}


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


def _tuner_cmd() -> list[str]:
    return [sys.executable, "-m", "tuner"]


class Runner:
    """Runs ``spec`` with outputs in ``out``; ``progress(arm, fraction, note)`` reports."""

    def __init__(self, spec: ExperimentSpec, out: Path, progress: Any = None) -> None:
        self.spec = spec
        self.out = Path(out)
        self.progress = progress or (lambda *a: None)

    def run(self) -> list[ArmResult]:
        self.out.mkdir(parents=True, exist_ok=True)
        results: list[ArmResult] = []
        with Cluster(
            clients=self.spec.get("cluster.clients"), backends=self.spec.get("cluster.backends")
        ) as cluster:
            for arm in self.spec.arms:
                result = self._arm(cluster, arm)
                results.append(result)
                if result.interrupted:
                    break
        return results

    # -- one arm --------------------------------------------------------------------------
    def _servers(self, cluster: Cluster) -> tuple[list[subprocess.Popen], list[int]]:
        """The server on the server host, or one on each backend host (worker indices and
        CPUs numbered on across them); returns the processes and every worker's pid."""
        s = self.spec
        hosts = cluster.by_role("backend") or [cluster.host("server")]
        workers, cpus = s.get("server.workers"), s.get("server.cpus")
        procs: list[subprocess.Popen] = []
        pids: list[int] = []
        for i, host in enumerate(hosts):
            first = i * workers
            argv = [
                sys.executable,
                "-m",
                "tuner.workload.server",
                "--workers",
                str(workers),
                "--port",
                str(s.get("server.port")),
                "--work",
                s.get("server.work"),
                "--first-index",
                str(first),
            ]
            if cpus:
                mine = [cpus[(first + w) % len(cpus)] for w in range(workers)]
                argv += ["--cpus", ",".join(map(str, mine))]
            if s.get("server.protocol") == "udp":
                argv.append("--udp")
            proc = cluster.popen(host, argv, stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            line = proc.stdout.readline()
            try:
                pids += json.loads(line)["workers"]
            except (ValueError, KeyError):
                stop_processes(procs)
                raise TunerError(
                    f"the reference server on {host.name} did not start", "see its error above"
                ) from None
        return procs, pids

    def _agent(
        self, arm: str, pids: list[int], arm_dir: Path, cluster: Cluster
    ) -> subprocess.Popen | None:
        if arm not in AGENT_ARMS:
            return None
        mode, model = AGENT_ARMS[arm]
        cfg = dict(self.spec.tuner.values)
        if model:
            cfg["model.kind"] = model
        cfg.update(
            {
                "target.pids": pids,
                "target.port": self.spec.get("server.port"),
                "target.protocol": self.spec.get("server.protocol"),
                "agent.name": f"exp-{os.getpid()}",
                "agent.control_socket": str(arm_dir / "agent.sock"),
                "agent.decision_log": str(arm_dir / "decisions.jsonl"),
            }
        )
        netns = cluster.host("server").netns
        if cfg.get("xdp.interface") and not cfg.get("xdp.netns"):
            cfg["xdp.netns"] = netns  # [tuner.xdp] interface names one of the server host's
        backends = cluster.by_role("backend")
        if backends:  # XDP on the server host's eth0 sends each new flow to a backend
            del cfg["target.pids"]  # each backend's workers: who listens there
            cfg["backends.namespaces"] = [b.netns for b in backends]
            cfg["backends.netns"] = netns
            cfg["backends.interface"] = "eth0"
        if arm in self.spec.get("trace_arms"):
            cfg["agent.record"] = str(arm_dir / "trace.parquet")
        (arm_dir / "agent.toml").write_text(_to_toml(cfg))
        log = open(arm_dir / "agent.log", "w")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [*_tuner_cmd(), "run", "--config", str(arm_dir / "agent.toml"), "--mode", mode],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        from tuner.agent.control import request

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise TunerError(f"the agent of arm {arm} failed to start: {_last_line(arm_dir)}")
            try:
                request(str(arm_dir / "agent.sock"), {"cmd": "status"}, timeout=1)
                return proc
            except TunerError:
                time.sleep(0.2)
        proc.kill()
        raise TunerError(f"the agent of arm {arm} did not start within 60 s")

    def _arm(self, cluster: Cluster, arm: str) -> ArmResult:
        s = self.spec
        arm_dir = self.out / arm
        if arm_dir.exists():  # an earlier run into the same --out: start the arm afresh
            shutil.rmtree(arm_dir)
        arm_dir.mkdir(parents=True)
        self.progress(arm, 0.0, "starting server")
        servers, pids = self._servers(cluster)
        agent = hog = None
        gens: list[subprocess.Popen] = []
        interrupted = False
        status: dict[str, Any] = {}
        cpu = 0.0
        failed = ""
        started = time.time()
        try:
            self.progress(arm, 0.0, "starting agent" if arm in AGENT_ARMS else "")
            agent = self._agent(arm, pids, arm_dir, cluster)
            if s.get("workload.profile") == "noisy-neighbour":
                hog = cluster.popen(
                    "server",
                    [
                        "taskset",
                        "-c",
                        str(s.get("workload.hog_cpu")),
                        sys.executable,
                        "-c",
                        "while True: pass",
                    ],
                )
            total = s.get("warmup_s") + s.get("duration_s")
            started = time.time()
            service = VIP if cluster.by_role("backend") else cluster.host("server").address
            for i, host in enumerate(cluster.by_role("client")):
                spec = self._load_spec(i, total, service)
                gens.append(
                    cluster.popen(
                        host,
                        [
                            sys.executable,
                            "-m",
                            "tuner.workload.loadgen",
                            "--config",
                            json.dumps(spec),
                            "--out",
                            str(arm_dir / f"samples-{i}.npy"),
                        ],
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
            try:
                for line in gens[0].stdout:
                    msg = json.loads(line)
                    if "t" in msg:
                        self.progress(arm, min(msg["t"] / total, 1.0), f"{msg['sent']} requests")
                for g in gens:
                    g.wait()
            except KeyboardInterrupt:
                interrupted = True
                for g in gens:
                    g.terminate()
                for g in gens:
                    g.wait()
            if agent is not None:
                died = agent.poll()
                status, cpu = _stop_agent(agent)
                if died is not None:
                    failed = (
                        f"the agent exited (status {died}) during the arm: {_last_line(arm_dir)}"
                    )
        finally:
            stop_processes([p for p in (agent, hog) if p is not None] + servers + gens)
            if arm in AGENT_ARMS:
                _remove_agent_traces(arm_dir)
        samples = self._collect(arm_dir, len(gens))
        decisions = _read_jsonl(arm_dir / "decisions.jsonl")
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

    def _load_spec(self, i: int, seconds: float, host: str) -> dict[str, Any]:
        s = self.spec
        w = {k.split(".", 1)[1]: v for k, v in s.values.items() if k.startswith("workload.")}
        return {
            "host": host,
            "port": s.get("server.port"),
            "rate": w["rate"] / s.get("cluster.clients"),
            "seconds": seconds,
            "connections": w["connections"],
            "profile": w["profile"],
            "service": w["service"],
            "lifetime_s": w["lifetime_s"],
            "seed": s.get("seed") * 1000 + i,
            "udp": s.get("server.protocol") == "udp",
            "profile_args": {
                k: w[k] for k in ("zipf_s", "shift_s", "period_s", "burst_s", "burst_factor")
            },
        }

    def _collect(self, arm_dir: Path, clients: int) -> np.ndarray:
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


def _stop_agent(proc: subprocess.Popen) -> tuple[dict[str, Any], float]:
    """SIGTERM the agent; return its final status and the CPU time it used (s)."""
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    status: dict[str, Any] = {}
    for line in (out or "").splitlines():
        try:
            status = json.loads(line)
        except ValueError:
            continue
    return status, float(status.get("cpu_s", 0.0))


def fallback_share(decisions: list[dict], since: float) -> tuple[float, str]:
    """The share of an agent's windows from wall time ``since`` on that were in fall-back,
    and the most common reason; no window at all counts as all in fall-back.

    >>> d = [{"window": 1, "t": 1.0, "fallback": "warm"}, {"window": 2, "t": 5.0},
    ...      {"window": 3, "t": 6.0, "fallback": "stale"}, {"window": 4, "t": 7.0},
    ...      {"t": 8.0, "event": "mode"}]
    >>> fallback_share(d, since=4.0)
    (0.3333333333333333, 'stale')
    >>> fallback_share([], since=0.0)
    (1.0, 'no decision was logged')
    """
    windows = [d for d in decisions if "window" in d and d.get("t", 0.0) >= since]
    if not windows:
        return 1.0, "no decision was logged"
    reasons = [d["fallback"] for d in windows if d.get("fallback")]
    why = max(set(reasons), key=reasons.count) if reasons else ""
    return len(reasons) / len(windows), why


def _last_line(arm_dir: Path) -> str:
    """The agent's last error line (its stderr is ``agent.log``), else its last line."""
    try:
        lines = (arm_dir / "agent.log").read_text().strip().splitlines()
    except OSError:
        lines = []
    errors = [x for x in lines if x.startswith("tuner: error: ")]
    if errors:
        return errors[-1].removeprefix("tuner: error: ")
    return f"no error printed (last: {lines[-1]})" if lines else "no error printed"


def _remove_agent_traces(arm_dir: Path) -> None:
    """Remove what an arm's agent left in the kernel if it died (pins, an attached program,
    its control socket); a clean exit has already removed it all."""
    from tuner.actuate.cleanup import cleanup

    try:
        text = (arm_dir / "agent.toml").read_text()
    except OSError:
        return
    name = tomllib.loads(text).get("agent", {}).get("name", "")
    if name:
        cleanup(names=(name, name + "-xdp"))


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a kill
    return out


def _to_toml(values: dict[str, Any]) -> str:
    """Flat ``section.key`` values as TOML text.

    >>> print(_to_toml({"a.x": 1, "a.y": "s", "b.z": [1, 2], "b.t": True}))
    [a]
    x = 1
    y = "s"
    <BLANKLINE>
    [b]
    z = [1, 2]
    t = true
    <BLANKLINE>
    """
    sections: dict[str, list[str]] = {}
    for key, v in values.items():
        sec, name = key.split(".", 1)
        text = json.dumps(v) if not isinstance(v, bool) else str(v).lower()
        sections.setdefault(sec, []).append(f"{name} = {text}")
    return "\n".join(f"[{sec}]\n" + "\n".join(lines) + "\n" for sec, lines in sections.items())
