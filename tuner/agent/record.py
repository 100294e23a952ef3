"""``tuner record``: the agent's view of a workload, window by window, into a trace.

The processes to record are picked by PID, command name, cgroup or listening port; the
scheduler probe observes them (the filter runs in the kernel) and a shadow-mode agent whose
steering writes nothing (:class:`~tuner.actuate.steering.NullSteering`) predicts and decides,
so the trace holds features, predictions, would-be decisions and outcomes, exactly as
``tuner run --record`` writes them.

>>> find_pids(pids=[os.getpid()]) == [os.getpid()]
True
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack

from tuner.actuate.steering import NullSteering
from tuner.agent.build import build_agent
from tuner.agent.config import AgentConfig
from tuner.agent.workers import WorkerMap
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


def recording_meta(config: AgentConfig, workers: WorkerMap, probes: tuple[str, ...]) -> dict:
    """The metadata written with every part of a recording (each row carries its worker's
    pid and pinned CPU, so a replay counts spare room per CPU as the live agent did)."""
    pids = workers.pids()
    probe = {"probes": list(probes), "window_ms": config.get("agent.window_ms"), "pids": pids}
    return base_meta(config.get("agent.window_ms"), pids, probe, dict(config.values))


def open_writer(config: AgentConfig, path: str, workers: WorkerMap) -> TraceWriter:
    """A writer for the windows of an agent steering ``workers``."""
    probes = ("sched", "net") if config.get("agent.sockets") else ("sched",)
    return TraceWriter(
        path,
        recording_meta(config, workers, probes),
        part_mb=config.get("agent.record_part_mb"),
        part_seconds=config.get("agent.record_part_seconds"),
    )


def record(config: AgentConfig, pids: list[int], out: str, seconds: float | None) -> TraceWriter:
    """Record until ``seconds`` pass (forever when None), Ctrl-C or SIGTERM; returns the
    closed writer (its ``windows``, ``rows`` and ``parts``)."""
    from tuner.probes.stream import FeatureStream

    workers = WorkerMap.from_pids(pids)
    agent = build_agent(config, workers, NullSteering(len(pids)), "shadow")
    with ExitStack() as stack:
        writer = stack.enter_context(open_writer(config, out, workers))
        stream = stack.enter_context(
            FeatureStream(
                config.probe_config(pids),
                ("sched", "net") if config.get("agent.sockets") else ("sched",),
            )
        )
        last = 0.0
        try:
            for window in stream.windows(seconds):
                gone = exited(pids)
                if gone:
                    print(f"tuner record: process {gone[0]} exited; stopping", file=sys.stderr)
                    break
                writer.add(agent.step(window.frames, window.closed))
                if time.monotonic() - last >= 1.0:
                    last = time.monotonic()
                    said = agent.count_probes(stream.stats())
                    print(
                        f"\rtuner record: {writer.windows} windows, {writer.rows} rows,"
                        f" {len(writer.parts)} parts closed, records lost"
                        f" {agent.counters.lost}, refused {sum(agent.counters.refused.values())}",
                        *(f"\ntuner record: {line}" for line in said),
                        sep="",
                        end="",
                        file=sys.stderr,
                        flush=True,
                    )
        except KeyboardInterrupt:
            pass
    print(file=sys.stderr)
    return writer
