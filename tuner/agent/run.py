"""``tuner run``: open the probes, the actuator and the control socket, then loop.

Everything is opened in one :class:`~contextlib.ExitStack`, so SIGTERM, Ctrl-C or an error
detaches the probes and the steering program and removes the pins and the socket. After a
SIGKILL the lease lapses (kernel defaults return within ``agent.lease_ms``) and
``tuner cleanup`` removes the rest.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from tuner.agent.config import AgentConfig
from tuner.agent.control import ControlServer
from tuner.agent.loop import Agent
from tuner.errors import TunerError
from tuner.system import exited


def resolve_pids(config: AgentConfig) -> list[int]:
    """The workers to observe and steer: ``target.pids``, or the processes that listen on
    ``target.port`` (in ``target.netns`` when set), in PID order."""
    pids = list(config.get("target.pids"))
    if not pids:
        port = config.get("target.port")
        if not port:
            raise TunerError(f"{config.source} names no target", "set target.pids or target.port")
        from tuner import netns
        from tuner.probes.stream import pids_listening_on

        with netns.inside(config.get("target.netns") or None):
            pids = pids_listening_on(port)
        if not pids:
            raise TunerError(
                f"no process listens on port {port}", "start the server first, or fix target.port"
            )
    gone = exited(pids)
    if gone:
        raise TunerError(f"target process {gone[0]} does not exist", "check target.pids")
    return sorted(pids)


@dataclass(frozen=True)
class Backends:
    """The backend hosts of ``[backends]``: the workers (pids) of each, and its MAC."""

    pids: list[int]  # every backend's workers, backend by backend
    groups: list[int]  # the backend of each pid
    macs: list[str]  # the MAC each backend's frames are addressed to


def resolve_backends(config: AgentConfig) -> Backends:
    """Per namespace of ``backends.namespaces``: the processes listening on ``target.port``
    there, and the MAC of its ``backends.backend_interface``."""
    from tuner import netns
    from tuner.actuate.xdp import interface_mac
    from tuner.probes.stream import pids_listening_on

    port = config.get("target.port")
    if not port:
        raise TunerError(f"{config.source} has no target.port", "set the port the backends serve")
    devices = config.get("backends.devices")
    names = config.get("backends.namespaces")
    if devices and len(devices) != len(names):
        raise TunerError(
            f"backends.devices names {len(devices)} interfaces for {len(names)} backends",
            "give one per backend, or none to use backends.interface for all",
        )
    pids: list[int] = []
    groups: list[int] = []
    macs: list[str] = []
    dev = config.get("backends.backend_interface")
    for i, name in enumerate(names):
        try:
            with netns.inside(name):
                found = sorted(pids_listening_on(port))
                macs.append(interface_mac(dev).hex(":"))
        except OSError as e:
            raise TunerError(
                f"backend {i}: no interface {dev} in namespace {name} ({e.strerror or e})",
                "check backends.namespaces and backends.backend_interface",
            ) from None
        if not found:
            raise TunerError(
                f"backend {i}: no process listens on port {port} in namespace {name}",
                "start the backend's server first, or fix backends.namespaces",
            )
        pids += found
        groups += [i] * len(found)
    return Backends(pids, groups, macs)


def run_agent(
    config: AgentConfig,
    mode: str = "shadow",
    seconds: float | None = None,
    progress: Any = None,
) -> Agent:
    """Run the agent until ``seconds`` pass (forever when None) or it is interrupted."""
    from tuner.agent.metrics import MetricsServer
    from tuner.probes.config import ProbeConfig
    from tuner.probes.stream import FeatureStream

    backends = resolve_backends(config) if config.get("backends.namespaces") else None
    if backends is not None and config.get("xdp.interface"):
        raise TunerError(
            f"{config.source} sets both [backends] and xdp.interface",
            "XDP on the entry steers to the backends: remove xdp.interface",
        )
    pids = backends.pids if backends else resolve_pids(config)
    agent = Agent(config, pids, mode, groups=backends.groups if backends else None)
    port = config.get("target.port")
    if not port:
        raise TunerError(f"{config.source} has no target.port", "set the port of the server")
    with ExitStack() as stack:
        if backends is not None:
            steering = stack.enter_context(_backend_steering(config, mode, backends))
        else:
            steering = stack.enter_context(_reuseport_steering(config, mode, pids))
            if steering.targets() != len(pids):
                n = steering.targets()
                raise TunerError(
                    f"the reuseport group has {n} sockets for {len(pids)} workers",
                    "give each worker one socket on the port",
                )
        xdp = None
        if agent.xdp_cpus:
            from tuner.actuate.xdp import XdpSteering

            xdp = stack.enter_context(
                XdpSteering(
                    **_steering_args(config, mode, "-xdp"),
                    ifname=config.get("xdp.interface"),
                    netns=config.get("xdp.netns") or None,
                    cpus=agent.xdp_cpus,
                )
            )
        stream = stack.enter_context(
            FeatureStream(
                ProbeConfig(window_ms=config.get("agent.window_ms"), pids=tuple(pids)),
                probes=("sched", "net") if config.get("agent.sockets") else ("sched",),
            )
        )
        stack.enter_context(ControlServer(config.get("agent.control_socket"), agent.handle))
        if config.get("metrics.port"):
            stack.enter_context(MetricsServer(config.get("metrics.port"), agent))
        agent.open_log(config.get("agent.decision_log"))
        stack.callback(agent.close_log)
        writer = None
        if config.get("agent.record"):
            from tuner.trace.record import open_writer

            writer = stack.enter_context(open_writer(config, agent, config.get("agent.record")))
        if progress:
            progress(agent)
        try:
            windows = stream.windows(seconds)
            for window in windows:
                entry = _step(agent, pids, stream, steering, window, xdp)
                if writer is not None:
                    writer.add(entry, window.closed)
        except KeyboardInterrupt:
            pass  # SIGTERM or Ctrl-C: leave the stack, which detaches everything
    return agent


def _steering_args(config: AgentConfig, mode: str, suffix: str = "") -> dict[str, Any]:
    """What every steering of the agent is opened with: its pin name, mode, lease, minimum."""
    pin_first = config.get("policy.kind") == "pin-first" and not suffix
    return {
        "name": config.get("agent.name") + suffix,
        "mode": mode,
        "lease_ms": config.get("agent.lease_ms"),
        "min_share": 0.0 if pin_first else config.get("policy.min_share"),
    }


def _reuseport_steering(config: AgentConfig, mode: str, pids: list[int]) -> Any:
    from tuner.actuate.reuseport import ReuseportSteering

    return ReuseportSteering(
        **_steering_args(config, mode),
        pids=pids,
        port=config.get("target.port"),
        protocol=config.get("target.protocol"),
        # the kernel counts datagrams per flow only for a policy that reads them
        count_flows=None if config.get("policy.hot_flow_share") > 0 else False,
    )


def _backend_steering(config: AgentConfig, mode: str, backends: Backends) -> Any:
    """XDP on the entry interface, each new flow sent to a backend host (its MAC)."""
    from tuner.actuate.xdp import XdpSteering

    entry = config.get("backends.interface")
    return XdpSteering(
        **_steering_args(config, mode),
        ifname=entry,
        netns=config.get("backends.netns") or None,
        devices=config.get("backends.devices") or [entry] * len(backends.macs),
        macs=backends.macs,
    )


def _step(
    agent: Agent, pids: list[int], stream: Any, steering: Any, window: Any, xdp: Any = None
) -> dict:
    """One window, after checking that every worker still exists."""
    gone = exited(pids)
    if gone:
        raise TunerError(
            f"target process {gone[0]} exited", "restart the agent when the server is back"
        )
    entry = agent.step(window.frames, steering, window.closed, xdp)
    agent.records_lost = stream.lost()
    return entry


def main_loop_banner(agent: Agent) -> None:
    print(
        f"tuner run: {agent.mode} mode, {len(agent.entities)} {agent.kind}s (pids {agent.pids}), "
        f"model {agent.config.model_name()}; control socket "
        f"{agent.config.get('agent.control_socket')}; Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
