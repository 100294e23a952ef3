"""The agents of an experiment's arms: started with a config the runner writes, stopped with
SIGTERM, judged afterwards (an agent that exited or stayed in fall-back fails its arm), and
cleaned up after when it died.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

from tuner.agent.config import SOCKET_PATH_MAX
from tuner.cluster import Hosts
from tuner.errors import TunerError
from tuner.experiment.spec import ExperimentSpec
from tuner.schema import to_toml

AGENT_ARMS = {
    "reactive": ("active", "last"),
    "shadow": ("shadow", None),
    "active": ("active", None),
    "variant": ("active", None),  # with the spec's [variant] settings
}


def start_agent(
    spec: ExperimentSpec,
    arm: str,
    pids: list[int],
    netns: str | None,
    arm_dir: Path,
    cluster: Hosts,
    remote: str,
) -> Any:
    """Start the agent of an agent arm (None for the kernel arm) and wait until it answers on
    its control socket, which it opens last, when it is up. The agent is given the workers'
    ``pids``, or, for a server in ``netns``, only where to find them. It runs on the server
    machine with its files in ``remote`` there; its config is kept in ``arm_dir`` too."""
    if arm not in AGENT_ARMS:
        return None
    mode, model = AGENT_ARMS[arm]
    agent = spec.variant if arm == "variant" and spec.variant is not None else spec.tuner
    cfg = dict(agent.values)
    if model:  # the reactive baseline: last window's load, and nothing learned of clients
        cfg["model.kind"] = model
        cfg["policy.clients"] = False
    cfg.update(
        {
            "target.pids": pids,
            "target.port": spec.get("server.port"),
            "target.protocol": spec.get("server.protocol"),
            "agent.name": f"exp-{os.getpid()}-{arm}",  # arms may run side by side
            "agent.control_socket": control_socket(remote, f"exp-{os.getpid()}-{arm}"),
            "agent.decision_log": f"{remote}/decisions.jsonl",
        }
    )
    if netns is not None:  # a real server: the agent finds its workers as it would anywhere
        del cfg["target.pids"]
        cfg["target.netns"] = netns
    netns = cluster.host("server").netns
    if cfg.get("xdp.interface") and not cfg.get("xdp.netns") and netns:
        cfg["xdp.netns"] = netns  # [tuner.xdp] interface names one of the server host's
    backends = cluster.by_role("backend")
    if backends:  # XDP on the server host's eth0 sends each new flow to a backend
        del cfg["target.pids"]  # each backend's workers: who listens there
        cfg["backends.namespaces"] = [b.netns for b in backends]
        cfg["backends.netns"] = netns
        cfg["backends.interface"] = "eth0"
    if arm in spec.get("trace_arms"):
        cfg["agent.record"] = f"{remote}/trace.parquet"
    text = to_toml(cfg)
    (arm_dir / "agent.toml").write_text(text)
    cluster.put(None, f"{remote}/agent.toml", text)
    argv = [cluster.python, "-m", "tuner", "run", "--config", f"{remote}/agent.toml"]
    proc = cluster.start(None, [*argv, "--mode", mode], lines=True, log=f"{remote}/agent.log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            cluster.collect(None, remote, arm_dir)  # its log says why
            raise TunerError(f"the agent of arm {arm} failed to start: {last_error(arm_dir)}")
        if cluster.answers(cfg["agent.control_socket"]):
            return proc
        time.sleep(0.2)
    proc.kill()
    raise TunerError(f"the agent of arm {arm} did not start within 60 s")


def control_socket(folder: str, name: str) -> str:
    """Where an arm's agent listens: in the arm's folder, or under /run/tuner when that path
    would be too long for a Unix socket (a deep ``--out``).

    >>> control_socket("/tmp/out/active", "exp-1-active")
    '/tmp/out/active/agent.sock'
    >>> control_socket("/deep" * 20, "exp-1-active")
    '/run/tuner/exp-1-active.sock'
    """
    path = f"{folder}/agent.sock"
    return path if len(path.encode()) <= SOCKET_PATH_MAX else f"/run/tuner/{name}.sock"


def stop_agent(proc: subprocess.Popen) -> tuple[dict[str, Any], float]:
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


def last_error(arm_dir: Path) -> str:
    """The agent's last error line (its stderr is ``agent.log``), else its last line."""
    try:
        lines = (arm_dir / "agent.log").read_text().strip().splitlines()
    except OSError:
        lines = []
    errors = [x for x in lines if x.startswith("tuner: error: ")]
    if errors:
        return errors[-1].removeprefix("tuner: error: ")
    return f"no error printed (last: {lines[-1]})" if lines else "no error printed"


def remove_agent_traces(arm_dir: Path, cluster: Hosts) -> None:
    """Remove what an arm's agent left in the kernel if it died (pins, an attached program,
    its control socket); a clean exit has already removed it all."""
    try:
        text = (arm_dir / "agent.toml").read_text()
    except OSError:
        return
    name = tomllib.loads(text).get("agent", {}).get("name", "")
    if name:
        cluster.cleanup_agent(name)


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a kill
    return out
