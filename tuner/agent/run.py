"""``tuner run``: open the steering, the probes and the control socket, then loop.

Everything is opened in one :class:`~contextlib.ExitStack`, so SIGTERM, Ctrl-C or an error
detaches the probes and the steering program and removes the pins and the socket. After a
SIGKILL the lease lapses (kernel defaults return within ``agent.lease_ms``) and
``tuner cleanup`` removes the rest.

Order matters: whatever can be refused is checked before anything is attached (root, the
group and its workers, the model, the control-socket path); the control socket opens last,
so an answer on it means the agent is up and deciding.
"""

from __future__ import annotations

import gc
import os
import sys
from contextlib import ExitStack
from typing import Any

from tuner.actuate.reuseport import ReuseportSteering
from tuner.agent.build import build_agent, load_model, xdp_cpus
from tuner.agent.config import AgentConfig
from tuner.agent.control import ControlServer, claim_path
from tuner.agent.loop import Agent
from tuner.agent.targets import Backends, resolve_backends, resolve_group, target_netns
from tuner.agent.watch import WorkerWatch, say
from tuner.agent.workers import WorkerMap
from tuner.errors import TunerError
from tuner.group import Group
from tuner.system import require_root

COUNT_EVERY = 10  # windows between reads of the probes' counters (lost, refused)


def run_agent(
    config: AgentConfig,
    mode: str = "shadow",
    seconds: float | None = None,
    progress: Any = None,
) -> Agent:
    """Run the agent until ``seconds`` pass (forever when None) or it is interrupted."""
    from tuner.agent.decisions import DecisionLog
    from tuner.agent.metrics import MetricsServer
    from tuner.probes.stream import FeatureStream

    require_root("tuner run")
    backends = resolve_backends(config) if config.get("backends.namespaces") else None
    if backends is not None and config.get("xdp.interface"):
        raise TunerError(
            f"{config.source} sets both [backends] and xdp.interface",
            "XDP on the entry steers to the backends: remove xdp.interface",
        )
    group = None if backends else resolve_group(config)
    workers = backends.workers if backends else WorkerMap.from_group(group)
    model = load_model(config)  # a bad model file is refused before anything is attached
    claim_path(config.get("agent.control_socket"))
    note = {"control_socket": os.path.abspath(config.get("agent.control_socket"))}
    with ExitStack() as stack:
        if backends is not None:
            steering = stack.enter_context(_backend_steering(config, mode, backends, note))
        else:
            steering = stack.enter_context(reuseport_steering(config, mode, group, note))
        xdp = None
        if xdp_cpus(config):
            from tuner.actuate.xdp import XdpSteering

            xdp = stack.enter_context(
                XdpSteering(
                    **_steering_args(config, mode, "-xdp", note),
                    ifname=config.get("xdp.interface"),
                    netns=config.get("xdp.netns") or None,
                    cpus=xdp_cpus(config),
                )
            )
        agent = build_agent(config, workers, steering, mode, xdp, model=model)
        probes = ("sched", "net") if config.get("agent.sockets") else ("sched",)
        stream = stack.enter_context(FeatureStream(config.probe_config(workers.pids()), probes))
        if config.get("agent.decision_log"):
            agent.log = DecisionLog(config.get("agent.decision_log"))
            stack.callback(agent.log.close)
        if config.get("metrics.port"):
            stack.enter_context(MetricsServer(config.get("metrics.port"), agent.snapshot))
        writer = None
        if config.get("agent.record"):
            from tuner.agent.record import open_writer

            writer = stack.enter_context(open_writer(config, config.get("agent.record"), workers))
        watch = None
        if group is not None:
            watch = WorkerWatch(config, agent, stream, group, target_netns(config), steering)
        stack.enter_context(ControlServer(config.get("agent.control_socket"), agent.handle))
        if progress:
            progress(agent)
        gc.freeze()  # what start-up made stays: collections walk only what windows make
        try:
            for window in stream.windows(seconds):
                if watch is not None:
                    watch.check()
                elif backends is not None:
                    _check_alive(backends.workers)
                record = agent.step(window.frames, window.closed)
                if record.window % COUNT_EVERY == 1:  # per-CPU counters: not every window
                    for line in agent.count_probes(stream.stats()):
                        say(line)
                if writer is not None:
                    writer.add(record)
        except KeyboardInterrupt:
            pass  # SIGTERM or Ctrl-C: leave the stack, which detaches everything
    return agent


def _check_alive(workers: WorkerMap) -> None:
    gone = [p for p in workers.pids() if not os.path.exists(f"/proc/{p}")]
    if gone:
        raise TunerError(
            f"target process {gone[0]} exited", "restart the agent when the server is back"
        )


def _steering_args(
    config: AgentConfig, mode: str, suffix: str = "", note: dict | None = None
) -> dict[str, Any]:
    """What every steering of the agent is opened with: its pin name, mode, lease, minimum,
    and what ``tuner cleanup`` should remove besides."""
    pin_first = config.get("policy.kind") == "pin-first" and not suffix
    return {
        "name": config.get("agent.name") + suffix,
        "mode": mode,
        "lease_ms": config.get("agent.lease_ms"),
        "min_share": 0.0 if pin_first else config.get("policy.min_share"),
        "note": dict(note or {}),
    }


def reuseport_steering(
    config: AgentConfig, mode: str, group: Group, note: dict
) -> ReuseportSteering:
    """A :class:`~tuner.actuate.reuseport.ReuseportSteering` over the group's sockets, in
    target order, each taken from its worker when the worker holds it."""
    return ReuseportSteering(
        **_steering_args(config, mode, note=note),
        handles=group.handles(),
        port=config.get("target.port"),
        protocol=config.get("target.protocol"),
        # the kernel counts datagrams per flow only for a policy that reads them
        count_flows=None if config.get("policy.hot_flow_share") > 0 else False,
    )


def _backend_steering(config: AgentConfig, mode: str, backends: Backends, note: dict) -> Any:
    """XDP on the entry interface, each new flow sent to a backend host (its MAC)."""
    from tuner.actuate.xdp import XdpSteering

    entry = config.get("backends.interface")
    return XdpSteering(
        **_steering_args(config, mode, note=note),
        ifname=entry,
        netns=config.get("backends.netns") or None,
        devices=config.get("backends.devices") or [entry] * len(backends.macs),
        macs=backends.macs,
    )


def main_loop_banner(agent: Agent) -> None:
    workers = agent.workers.workers
    print(
        f"tuner run: {agent.mode} mode, {len(workers.entities)} {workers.kind}s "
        f"(pids {workers.pids()}), model {agent.config.model_name()}; control socket "
        f"{agent.config.get('agent.control_socket')}; Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
