"""``tuner bench loop``: control-loop latency, window closed -> table written, per entity count.

For 8, 64 and 512 entities (workers), synthetic scheduler frames with a periodic hotspot
pattern go through the agent's real code path (:meth:`tuner.agent.loop.Agent.step`: the
workers channel's loads, learner, policy and steering) in active mode, and the table is
written into a real sk_reuseport steering program's maps in the kernel. The group has 64
loopback sockets, so for 512 entities the table's worker indices are written modulo 64; the
write itself (two maps, 256 slots) costs the same for any entity count.

It also reports the learned model's MAE against the last-value baseline on that pattern.
"""

from __future__ import annotations

import gc
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tuner.actuate.base import MAX_TARGETS
from tuner.actuate.reuseport import ReuseportSteering
from tuner.actuate.steering import Decision
from tuner.agent.build import build_agent
from tuner.agent.config import AgentConfig
from tuner.agent.workers import WorkerMap
from tuner.errors import TunerError
from tuner.probes.base import Frame

SIZES = (8, 64, 512)
WINDOW_NS = 100_000_000


class _Modulo:
    """A steering that writes an agent's table of ``n`` targets into a reuseport group of at
    most 64 sockets (target ``t`` to socket ``t mod 64``): the write costs the same for any
    ``n``."""

    def __init__(self, steering: ReuseportSteering, n: int) -> None:
        self.steering = steering
        self.n = n
        self.name, self.mode = steering.name, steering.mode

    @property
    def counts_flows(self) -> bool:
        return False

    def targets(self) -> int:
        return self.n

    def apply(self, table: Sequence[int]) -> Decision:
        return self.steering.apply([t % self.steering.targets() for t in table])

    def renew(self) -> None:
        self.steering.renew()

    def expire(self) -> None:
        self.steering.expire()

    def set_mode(self, mode: str) -> None:
        self.steering.set_mode(mode)

    def flow_hits(self) -> dict[int, int]:
        return {}

    def set_overrides(self, overrides: Mapping[int, int]) -> bool:
        return False

    def close(self) -> None:
        pass


def frames_for(n: int, window: int) -> list[Frame]:
    """Scheduler frames of ``n`` single-threaded workers: each is hot (load 0.95) every 4th
    window, a quarter of them at a time, and follows a slow wave otherwise."""
    start = window * WINDOW_NS
    out = []
    for i in range(n):
        load = 0.3 + 0.1 * math.sin(window / 7 + i)
        if (window + i) % 4 == 0:
            load = 0.95
        out.append(
            Frame(
                "sched",
                f"task:{i + 1}",
                start,
                start + WINDOW_NS,
                {"oncpu_ns": load * WINDOW_NS, "runq_wait_ns": 0.0},
                {"tgid": str(i + 1)},
            )
        )
    return out


def measure(n: int, windows: int, steering: ReuseportSteering) -> dict[str, float]:
    config = AgentConfig.from_dict(
        {"model": {"warmup_windows": 0}, "policy": {"min_share": 0.0}, "guard": {"enabled": False}}
    )
    workers = WorkerMap.from_pids(list(range(1, n + 1)), cpus=[None] * n)
    agent = build_agent(config, workers, _Modulo(steering, n), mode="active")
    gc.freeze()  # as tuner run does once it is up
    for w in range(windows):
        frames = frames_for(n, w)
        agent.step(frames, time.monotonic_ns())
    lat = sorted(agent.latency_ms)
    scores = agent.workers.learner.scores()
    return {
        f"p50_ms_{n}": round(lat[len(lat) // 2], 3),
        f"p99_ms_{n}": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3),
        f"model_mae_{n}": round(scores["model_mae"], 4),
        f"baseline_mae_{n}": round(scores["baseline_mae"], 4),
    }


def run(windows: int = 300, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    """Loop latency percentiles (ms) and model vs baseline MAE for each size."""
    if windows < 10:
        raise TunerError(f"--windows must be at least 10; got {windows}")
    socks = []
    try:
        for _ in range(MAX_TARGETS):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", socks[0].getsockname()[1] if socks else 0))
            s.listen(16)
            socks.append(s)
        out: dict[str, Any] = {"windows": windows}
        with ReuseportSteering(
            name=f"bench-loop-{os.getpid()}", mode="active", sockets=socks, lease_ms=60000
        ) as steering:
            for n in sizes:
                out.update(measure(n, windows, steering))
        return out
    finally:
        for s in socks:
            s.close()


def render(r: dict[str, Any]) -> str:
    lines = [f"control loop, window closed -> table written ({r['windows']} windows each)"]
    for n in SIZES:
        if f"p99_ms_{n}" in r:
            lines.append(
                f"  {n:>3} entities: p50 {r[f'p50_ms_{n}']:7.3f} ms  p99 {r[f'p99_ms_{n}']:7.3f} ms"
                f"   MAE model {r[f'model_mae_{n}']:.4f} vs last value {r[f'baseline_mae_{n}']:.4f}"
            )
    return "\n".join(lines)
