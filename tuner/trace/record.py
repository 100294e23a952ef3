"""``tuner record``: the agent's view of a workload, window by window, into a trace.

The processes to record are picked by PID, command name, cgroup or listening port; the
scheduler probe observes them (the filter runs in the kernel) and a shadow-mode agent with an
actuator that writes nothing predicts and decides, so the trace holds features, predictions,
would-be decisions and outcomes, exactly as ``tuner run --record`` writes them.

>>> find_pids(pids=[os.getpid()]) == [os.getpid()]
True
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack
from typing import Any

from tuner.agent.config import AgentConfig
from tuner.errors import TunerError
from tuner.system import exited
from tuner.trace.schema import base_meta
from tuner.trace.writer import TraceWriter


def find_pids(
    pids: list[int] | None = None,
    comm: str | None = None,
    cgroup: str | None = None,
    ports: list[int] | None = None,
    netns: str | None = None,
) -> list[int]:
    """The processes the filters select, in PID order; an error if none is found."""
    gone = exited(pids or [])
    if gone:
        raise TunerError(f"process {gone[0]} does not exist", "check the --pid value")
    found = set(pids or [])
    if comm:
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    with open(f"/proc/{p}/comm") as f:
                        if f.read().strip() == comm[:15]:
                            found.add(int(p))
                except OSError:
                    continue
    if cgroup:
        try:
            with open(os.path.join(cgroup, "cgroup.procs")) as f:
                found.update(int(x) for x in f.read().split())
        except OSError as e:
            raise TunerError(
                f"cannot read cgroup {cgroup}: {e.strerror}", "give a cgroup v2 directory"
            ) from e
    if ports:
        from tuner import netns as ns
        from tuner.probes.stream import pids_listening_on

        with ns.inside(netns or None):
            for port in ports:
                found.update(pids_listening_on(port))
    if not found:
        raise TunerError(
            "no process matches the filters", "check --pid, --comm, --cgroup or --port"
        )
    return sorted(found)


def recording_meta(
    config: AgentConfig,
    pids: list[int],
    probes: tuple[str, ...],
    worker_cpu: list[int | None],
) -> dict[str, Any]:
    """The metadata written with every part of a recording; ``worker_cpu`` (the agent's: the
    CPU each worker is pinned to, or None) lets a replay count spare room per CPU as live did."""
    probe = {"probes": list(probes), "window_ms": config.get("agent.window_ms"), "pids": pids}
    meta = base_meta(config.get("agent.window_ms"), pids, probe, dict(config.values))
    meta["worker_cpus"] = list(worker_cpu)
    return meta


def open_writer(config: AgentConfig, agent: Any, path: str) -> TraceWriter:
    """A writer for the windows of ``agent`` (an :class:`~tuner.agent.loop.Agent`)."""
    return TraceWriter(
        path,
        recording_meta(config, agent.pids, ("sched",), agent.worker_cpu),
        part_mb=config.get("agent.record_part_mb"),
        part_seconds=config.get("agent.record_part_seconds"),
    )


def record(config: AgentConfig, pids: list[int], out: str, seconds: float | None) -> TraceWriter:
    """Record until ``seconds`` pass (forever when None), Ctrl-C or SIGTERM; returns the
    closed writer (its ``windows``, ``rows`` and ``parts``)."""
    from tuner.agent.loop import Agent
    from tuner.probes.config import ProbeConfig
    from tuner.probes.stream import FeatureStream
    from tuner.trace.replay import NullSteering

    agent = Agent(config, pids, "shadow")
    steering = NullSteering()
    with ExitStack() as stack:
        writer = stack.enter_context(open_writer(config, agent, out))
        stream = stack.enter_context(
            FeatureStream(
                ProbeConfig(window_ms=config.get("agent.window_ms"), pids=tuple(pids)), ("sched",)
            )
        )
        last = 0.0
        try:
            for window in stream.windows(seconds):
                gone = exited(pids)
                if gone:
                    print(f"tuner record: process {gone[0]} exited; stopping", file=sys.stderr)
                    break
                entry = agent.step(window.frames, steering, window.closed)
                writer.add(entry, window.closed)
                if time.monotonic() - last >= 1.0:
                    last = time.monotonic()
                    lost = stream.lost()
                    print(
                        f"\rtuner record: {writer.windows} windows, {writer.rows} rows,"
                        f" {len(writer.parts)} parts closed, records lost {lost}",
                        end="",
                        file=sys.stderr,
                        flush=True,
                    )
        except KeyboardInterrupt:
            pass
    print(file=sys.stderr)
    return writer
