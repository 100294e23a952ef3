"""``tuner bench agent``: what the agent itself costs, run as users run it.

The agent (``tuner run``, real probes, real sk_reuseport steering, shadow mode, decision log
on) runs against reference-server workers on loopback, 4 and then 64 of them (64 share the
CPUs), under a light open-loop load. After its model has warmed up, the agent's own CPU time
(all its threads, from its status) is read over ``seconds`` of steady state and given as a
fraction of one core: ``cpu_frac_4`` and ``cpu_frac_64``. Its loop latency (window closed ->
decision made, p50 and p99 from its status) is reported beside it.

Start-up is measured on the 4-worker agent: ``startup_s`` is the time from starting the
process to its first window decided, ``ready_s`` to its control socket answering, and
``first_table_s`` to its first decision that is the model's (after ``model.warmup_windows``).
The agent is started twice (``first`` and ``again``): BCC compiles the programs from C at
every start (it has no public way to load one compiled before; docs/cost.md), so the second
start is the same work on a warm machine (files and libraries in the page cache).

>>> r = AgentRun(4, 0.012345, 0.4, 1.3, 0.9, 1.1, 3.1, 20.0, 200, 0)
>>> r.to_json()["cpu_frac"], r.to_json()["startup_s"]
(0.0123, 1.1)
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuner.agent.control import request
from tuner.errors import TunerError
from tuner.schema import to_toml

SIZES = (4, 64)
LOAD_RATE = 200.0  # requests/s: light, so that the host is not busy with the load itself
SERVICE = "exp:200"  # 0.2 ms of CPU a request
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class AgentRun:
    """One agent's measured costs."""

    workers: int
    cpu_frac: float  # CPU time per second of steady state, fraction of one core
    loop_ms_p50: float | None
    loop_ms_p99: float | None
    ready_s: float  # start -> control socket answers
    startup_s: float  # start -> first window decided
    first_table_s: float | None  # start -> first decision of the model's (None: not seen)
    steady_s: float  # seconds the CPU time was read over
    windows: int  # windows the agent decided in steady state
    records_lost: int

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(seconds: float = 20.0, sizes: tuple[int, ...] = SIZES,
        progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:  # fmt: skip
    """Measure the agent at each size of ``sizes``; return the bench's JSON object."""
    out: dict[str, Any] = {"seconds": seconds, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="tuner-bench-agent-") as tmp:
        for n in sizes:
            progress(f"{n} workers: starting the server and the agent")
            with _Server(n) as server:
                runs = [_measure(server, n, Path(tmp) / f"{n}-first", seconds, progress)]
                if n == sizes[0]:  # start-up again, with the programs compiled before
                    runs.append(_measure(server, n, Path(tmp) / f"{n}-again", 0.0, progress))
            out["runs"][str(n)] = [r.to_json() for r in runs]
            out[f"cpu_frac_{n}"] = runs[0].cpu_frac
            out[f"loop_ms_p99_{n}"] = runs[0].loop_ms_p99
            if len(runs) > 1:
                out["startup_s_first"] = runs[0].startup_s
                out["startup_s"] = runs[1].startup_s
                out["first_table_s"] = runs[1].first_table_s
    return out


class _Server:
    """The reference server with ``n`` workers on loopback, and a light load on it."""

    def __init__(self, n: int) -> None:
        self.n, self.port = n, free_port()
        self.procs: list[subprocess.Popen] = []
        self.pids: list[int] = []

    def __enter__(self) -> _Server:
        srv = subprocess.Popen(
            [sys.executable, "-m", "tuner.workload.server", "--workers", str(self.n),
             "--port", str(self.port), "--work", "cpu", "--host", "127.0.0.1"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.procs.append(srv)
        try:
            self.pids = json.loads(srv.stdout.readline())["workers"]
        except (ValueError, KeyError):
            self.__exit__()
            raise TunerError("the reference server did not start", "see its error above") from None
        load = {"host": "127.0.0.1", "port": self.port, "rate": LOAD_RATE, "seconds": 3600.0,
                "connections": min(4 * self.n, 64), "service": SERVICE, "drain_s": 0.5}  # fmt: skip
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "tuner.workload.loadgen", "--config", json.dumps(load),
             "--out", "/dev/null"],
            stdout=subprocess.DEVNULL,
        ))  # fmt: skip
        return self

    def __exit__(self, *_: object) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _measure(server: _Server, n: int, d: Path, seconds: float,
             progress: Callable[[str], None]) -> AgentRun:  # fmt: skip
    """Start an agent on ``server``, time its start, read its CPU over ``seconds``, stop it."""
    d.mkdir(parents=True)
    cfg = {"target.pids": server.pids, "target.port": server.port,
           "agent.name": f"bench-{n}-{d.name}", "agent.control_socket": str(d / "agent.sock"),
           "agent.decision_log": str(d / "decisions.jsonl")}  # fmt: skip
    (d / "agent.toml").write_text(to_toml(cfg))
    log = open(d / "agent.log", "w")  # noqa: SIM115 - handed to the child
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner", "run", "--config", str(d / "agent.toml"),
         "--mode", "shadow"],
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    log.close()
    try:
        ready = _until(proc, d, lambda s: True) - t0
        startup = _until(proc, d, lambda s: s["windows"] >= 1) - t0
        warm = _until(proc, d, _model_decides)
        table = warm - t0
        progress(f"{n} workers: up in {startup:.2f} s; measuring {seconds:g} s of steady state")
        s0, w0 = _status(d), time.monotonic()
        if seconds > 0:
            time.sleep(seconds)  # the measurement itself: a fixed span of the agent's life
        s1, w1 = _status(d), time.monotonic()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.returncode not in (0, -15):
        raise TunerError(f"the agent exited with {proc.returncode}", f"see {d / 'agent.log'}")
    span = max(w1 - w0, 1e-9)
    return AgentRun(
        n, (s1["cpu_s"] - s0["cpu_s"]) / span if seconds > 0 else 0.0,
        s1["loop_ms_p50"], s1["loop_ms_p99"], ready, startup, table, span,
        s1["windows"] - s0["windows"], s1["records_lost"],
    )  # fmt: skip


def _model_decides(status: dict[str, Any]) -> bool:
    last = status["last_decision"]
    return bool(last) and "warming" not in last.get("why", "")


def _status(d: Path) -> dict[str, Any]:
    return request(str(d / "agent.sock"), {"cmd": "status"}, timeout=5)


def _until(proc: subprocess.Popen, d: Path, ok: Callable[[dict[str, Any]], bool]) -> float:
    """The time at which the agent's status first satisfies ``ok`` (polled every 20 ms)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TunerError(f"the agent exited at start ({proc.returncode})",
                             f"see {d / 'agent.log'}")  # fmt: skip
        try:
            if ok(_status(d)):
                return time.monotonic()
        except TunerError:
            pass  # not up yet
        time.sleep(0.02)
    raise TunerError(f"the agent did not get there in {START_TIMEOUT_S:g} s",
                     f"see {d / 'agent.log'}")  # fmt: skip


def render(r: dict[str, Any]) -> str:
    """The bench's result as lines of text.

    >>> print(render({"seconds": 20.0, "cpu_frac_4": 0.01, "loop_ms_p99_4": 0.9,
    ...               "startup_s_first": 4.2, "startup_s": 3.0, "first_table_s": 5.1}))
    agent CPU, fraction of one core over 20 s of steady state:
      4 workers: 0.0100  (loop p99 0.9 ms)
    start -> first window decided: 4.20 s first start, 3.00 s again (model's first at 5.10 s)
    """
    lines = [f"agent CPU, fraction of one core over {r['seconds']:g} s of steady state:"]
    for n in SIZES:
        if f"cpu_frac_{n}" in r:
            lines.append(f"  {n} workers: {r[f'cpu_frac_{n}']:.4f}  "
                         f"(loop p99 {r[f'loop_ms_p99_{n}']} ms)")  # fmt: skip
    if "startup_s" in r:
        table = r["first_table_s"]
        lines.append(
            f"start -> first window decided: {r['startup_s_first']:.2f} s first start, "
            f"{r['startup_s']:.2f} s again"
            + (f" (model's first at {table:.2f} s)" if table is not None else "")
        )
    return "\n".join(lines)
