"""What the agent steers to: the workers of a reuseport group (found by :mod:`tuner.group`)
or the backend hosts of ``[backends]``, checked against the configuration."""

from __future__ import annotations

import os
from dataclasses import dataclass

from tuner.agent.config import AgentConfig
from tuner.agent.workers import WorkerMap
from tuner.errors import TunerError
from tuner.group import Group
from tuner.netns import netns_link
from tuner.system import exited


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
    link = target_netns(config)
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


def target_netns(config: AgentConfig) -> str | None:
    """The network namespace the group is looked up in, as the ``net:[inode]`` text of
    ``/proc/<pid>/ns/net``: ``target.netns``, else that of the first of ``target.pids``, else
    None (this process's)."""
    if config.get("target.netns"):
        return netns_link(config.get("target.netns"))
    pids = config.get("target.pids")
    if pids:
        try:
            return os.readlink(f"/proc/{pids[0]}/ns/net")
        except OSError:
            return None
    return None


@dataclass(frozen=True)
class Backends:
    """The backend hosts of ``[backends]``: each one's workers, and its MAC."""

    workers: WorkerMap  # entity backend:<i> is every process of backend i
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
    members: list[list[tuple[int, int | None]]] = []
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
        members.append([(p, None) for p in found])
    return Backends(WorkerMap.from_members(members, kind="backend"), macs)
