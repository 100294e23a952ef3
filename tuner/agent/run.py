"""``tuner run``: open the probes, the actuator and the control socket, then loop.

Everything is opened in one :class:`~contextlib.ExitStack`, so SIGTERM, Ctrl-C or an error
detaches the probes and the steering program and removes the pins and the socket. After a
SIGKILL the lease lapses (kernel defaults return within ``agent.lease_ms``) and
``tuner cleanup`` removes the rest.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from tuner.agent.config import AgentConfig
from tuner.agent.control import ControlServer
from tuner.agent.loop import Agent
from tuner.errors import TunerError
from tuner.group import Group
from tuner.netns import netns_link
from tuner.system import exited, require_root


def resolve_group(config: AgentConfig) -> Group:
    """The reuseport group on ``target.port`` (in ``target.netns``, or the namespace of the
    processes of ``target.pids``) and the worker of each socket; ``target.pids``, when given,
    must name exactly the group's workers."""
    from tuner.group import discover

    port = config.get("target.port")
    if not port:
        raise TunerError(f"{config.source} has no target.port", "set the port of the server")
    pids = list(config.get("target.pids"))
    twice = sorted({p for p in pids if pids.count(p) > 1})
    if twice:
        raise TunerError(f"target.pids names pid {twice[0]} twice", "list each worker once")
    gone = exited(pids)
    if gone:
        raise TunerError(f"target process {gone[0]} does not exist", "check target.pids")
    netns = config.get("target.netns")
    link = netns_link(netns) if netns else _pid_netns(pids[0]) if pids else None
    group = discover(
        port, config.get("target.protocol"), link, config.get("target.address") or None
    )
    if pids:
        left_out = [s for s in group.sockets if s.worker.pid not in pids]
        if left_out:
            s = left_out[0]
            held = ",".join(str(p) for p in sorted({p for p, _ in s.holders}))
            raise TunerError(
                f"target.pids leaves out {len(left_out)} of the {len(group.sockets)} sockets "
                f"on port {port}: socket {s.inode} is served by {s.worker.key} "
                f"({s.worker.comm}), held by {held}",
                "list every worker (`tuner group PORT` shows them), or leave target.pids "
                "empty to take the whole group",
            )
        extra = sorted(set(pids) - set(group.pids))
        if extra:
            raise TunerError(
                f"target.pids names pid {extra[0]}, which serves no socket on port {port} "
                f"(the workers are {', '.join(map(str, group.pids))})",
                "list only the group's workers, or leave target.pids empty",
            )
    return group


def _pid_netns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


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

    require_root("tuner run")
    backends = resolve_backends(config) if config.get("backends.namespaces") else None
    if backends is not None and config.get("xdp.interface"):
        raise TunerError(
            f"{config.source} sets both [backends] and xdp.interface",
            "XDP on the entry steers to the backends: remove xdp.interface",
        )
    group = None if backends else resolve_group(config)
    if group is not None and group.shape == "threads":
        raise TunerError(
            f"the workers on port {group.port} are threads; this tuner steers processes",
            "see docs/real-servers.md",
        )
    pids = backends.pids if backends else group.pids
    agent = Agent(config, pids, mode, groups=backends.groups if backends else None)
    control = ControlServer(config.get("agent.control_socket"), agent.handle)
    control.claim_path()  # before anything is loaded: a bad path costs nothing
    note = {"control_socket": os.path.abspath(config.get("agent.control_socket"))}
    with ExitStack() as stack:
        if backends is not None:
            steering = stack.enter_context(_backend_steering(config, mode, backends, note))
        else:
            steering = stack.enter_context(_reuseport_steering(config, mode, group, note))
        xdp = None
        if agent.xdp_cpus:
            from tuner.actuate.xdp import XdpSteering

            xdp = stack.enter_context(
                XdpSteering(
                    **_steering_args(config, mode, "-xdp", note),
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
        if config.get("metrics.port"):
            stack.enter_context(MetricsServer(config.get("metrics.port"), agent))
        agent.open_log(config.get("agent.decision_log"))
        stack.callback(agent.close_log)
        writer = None
        if config.get("agent.record"):
            from tuner.trace.record import open_writer

            writer = stack.enter_context(open_writer(config, agent, config.get("agent.record")))
        stack.enter_context(control)  # last: an answer on it means the agent is up
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


def _reuseport_steering(config: AgentConfig, mode: str, group: Group, note: dict) -> Any:
    from tuner.actuate.reuseport import ReuseportSteering

    def handle(s: Any) -> tuple[int, int]:  # the worker's own fd when it holds the socket
        return next((h for h in s.holders if h[0] == s.worker.pid), s.holders[0])

    return ReuseportSteering(
        **_steering_args(config, mode, note=note),
        handles=[handle(s) for s in group.sockets],
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
