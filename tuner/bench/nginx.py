"""nginx under ``tuner bench overhead``: requests per second of a real server, bare, with the
agent's default probes attached (the scheduler probe, on nginx's processes), with all
probes attached (scheduler, syscalls, network), and with empty programs on all their attach
points (the floor no probe on them can undercut), the arms alternated round by round.

nginx (Debian's package, :mod:`tuner.workload.nginx`) runs 2 workers on loopback; ``wrk``
(closed loop, 1 thread, 32 connections, keep-alive) asks for its 1 KiB file. The probes'
host-wide cost is in the figure: wrk's own syscalls go through the syscall probe's attach
points too, as every process's would on a production host.

>>> requests_per_s("Requests/sec:  36012.47\\nTransfer/sec: 9.1MB\\n")
36012.47
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tuner.bench.floor import empty_programs
from tuner.errors import TunerError
from tuner.probes.config import ProbeConfig
from tuner.probes.stream import FeatureStream
from tuner.workload.nginx import Nginx

ARMS = {"bare": (), "agent": ("sched",), "all": ("sched", "syscalls", "net"), "floor": ()}
WORKERS = 2
PATH = "/cost/0.txt"


def requests_per_s(wrk_output: str) -> float:
    m = re.search(r"Requests/sec:\s+([\d.]+)", wrk_output)
    if m is None:
        raise TunerError(f"wrk printed no rate: {wrk_output.strip()[-200:]}")
    return float(m.group(1))


def _wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TunerError(f"nginx did not listen on 127.0.0.1:{port} within {timeout:g} s")


def _wrk(port: int, seconds: float) -> subprocess.Popen:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise TunerError("wrk is not installed", "apt-get install wrk (or run `make setup`)")
    return subprocess.Popen(
        [wrk, "-t1", "-c32", f"-d{max(1, round(seconds))}s", f"http://127.0.0.1:{port}{PATH}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _one(port: int, pids: tuple[int, ...], arm: str, seconds: float) -> float:
    if not ARMS[arm]:  # bare, or the empty programs
        with empty_programs("floor") if arm == "floor" else contextlib.nullcontext():
            return requests_per_s(_wrk(port, seconds).communicate()[0])
    with FeatureStream(ProbeConfig(window_ms=100, pids=pids), ARMS[arm]) as stream:
        proc = _wrk(port, seconds)
        for _ in stream.windows():
            if proc.poll() is not None:
                break
        return requests_per_s(proc.communicate()[0])


def run(seconds: float, rounds: int, progress: Callable[[str], None] | None = None) -> dict:
    """Each arm ``rounds`` times, order rotated each round; the medians and the ratios."""
    from tuner.bench.agent import free_port
    from tuner.bench.overhead import median

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tuner-bench-nginx-") as tmp:
        n = Nginx(Path(tmp), port, WORKERS, address="127.0.0.1")
        master = n.start(lambda argv: subprocess.Popen(argv, stderr=subprocess.DEVNULL))
        try:
            _wait_listening(port)
            children = Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text()
            pids = (master.pid, *map(int, children.split()))
            got: dict[str, list[float]] = {a: [] for a in ARMS}
            arms = list(ARMS)
            for r in range(rounds):
                for i in range(len(arms)):
                    arm = arms[(i + r) % len(arms)]
                    if progress:
                        progress(f"nginx: round {r + 1}/{rounds}, {arm}")
                    got[arm].append(_one(port, pids, arm, seconds))
        finally:
            n.stop()
    bare = median(got["bare"])
    out = {"nginx_bare_rps": round(bare)}
    for arm in ("agent", "all", "floor"):
        out[f"nginx_{arm}_ratio"] = round(median(got[arm]) / bare, 4)
        out[f"nginx_{arm}_round_ratios"] = [
            round(a / b, 4) for a, b in zip(got[arm], got["bare"], strict=True)
        ]
    # microseconds each arm adds to a request, and all probes' over the floor's (as for the
    # other workloads: 1.0 would be probes that cost nothing beyond being attached)
    added = {a: 1e6 / median(got[a]) - 1e6 / bare for a in ("all", "floor")}
    out["nginx_all_us"], out["nginx_floor_us"] = round(added["all"], 3), round(added["floor"], 3)
    if added["floor"] > 0:
        out["nginx_all_over_floor"] = round(added["all"] / added["floor"], 3)
    return out
