"""An agent from its configuration: the channels it needs, each with its learner, policy and
steering (:mod:`tuner.agent.channels`).

>>> from tuner.actuate.steering import NullSteering
>>> from tuner.agent.config import AgentConfig
>>> from tuner.agent.workers import WorkerMap
>>> cfg = AgentConfig.from_dict({"agent": {"sockets": True}})
>>> agent = build_agent(cfg, WorkerMap.from_pids([1, 2], cpus=[0, 1]), NullSteering(2))
>>> [c.name for c in agent.channels]
['workers', 'sockets', 'cpus']
>>> cfg = AgentConfig.from_dict({"agent": {"sockets": True}, "policy": {"clients": True}})
>>> build_agent(cfg, WorkerMap.from_pids([1, 2], cpus=[0, 1]), NullSteering(2)).channels[1].clients
<tuner.learn.clients.ClientCosts object at ...>
"""

from __future__ import annotations

import os
from typing import Any

from tuner.actuate.steering import Steering
from tuner.agent.channels import CpuChannel, SocketChannel, WorkerChannel, XdpChannel
from tuner.agent.config import AgentConfig
from tuner.agent.loop import Agent
from tuner.agent.workers import WorkerMap
from tuner.errors import TunerError
from tuner.learn.clients import ClientCosts
from tuner.learn.online import Learner
from tuner.policy.clients import ClientPolicy
from tuner.policy.flows import HotFlowPolicy
from tuner.policy.shares import SharePolicy


def share_policy(config: AgentConfig) -> SharePolicy:
    """The ``[policy]`` share policy."""
    c = config
    return SharePolicy(
        capacity=c.get("policy.capacity"),
        min_share=c.get("policy.min_share"),
        max_step=c.get("policy.max_step"),
        hysteresis=c.get("policy.hysteresis"),
        fill=c.get("policy.fill"),
    )


def load_model(config: AgentConfig) -> Any:
    """The workers' load model: a saved offline model when ``model.path`` is set (checked
    against this agent's features and window), else a fresh one of ``model.kind``."""
    path = config.get("model.path")
    if not path:
        return config.get("model.kind")
    from tuner.learn.boost import OfflineModel
    from tuner.learn.modelfile import load_model as load_saved

    saved = load_saved(path)
    saved.check(config.get("agent.window_ms"))
    return OfflineModel.from_saved(saved)


def xdp_cpus(config: AgentConfig) -> list[int]:
    """The CPUs ``[xdp]`` spreads new flows over ([] when XDP is off)."""
    if not config.get("xdp.interface"):
        return []
    return list(config.get("xdp.cpus")) or list(range(os.cpu_count() or 1))


def build_agent(
    config: AgentConfig,
    workers: WorkerMap,
    steering: Steering,
    mode: str = "shadow",
    xdp: Steering | None = None,
    model: Any = None,
) -> Agent:
    """The agent for ``workers`` steered through ``steering`` (and ``xdp`` over
    :func:`xdp_cpus`, when given); ``model``: the workers' load model when already loaded
    (:func:`load_model`)."""
    kind, threshold = config.get("model.kind"), config.get("model.hot_threshold")
    horizon = config.get("model.horizon_windows")
    sockets = None
    if config.get("agent.sockets"):
        clients = None
        if config.get("policy.clients"):
            if not steering.places_clients:
                raise TunerError(
                    "policy.clients places new connections in a reuseport group, and this "
                    "agent steers another way",
                    "set policy.clients = false",
                )
            clients = ClientCosts(factor=config.get("policy.heavy_client_factor"))
        sockets = SocketChannel(Learner(kind, threshold), workers, clients)
    flows = HotFlowPolicy(
        share=config.get("policy.hot_flow_share"),
        hold_windows=config.get("policy.hot_flow_hold"),
        margin=0.1 * config.get("policy.capacity"),
    )
    model = model if model is not None else load_model(config)
    main = WorkerChannel(
        Learner(model, threshold, horizon),
        share_policy(config),
        steering,
        workers,
        flows,
        sockets,
        pin_first=config.get("policy.kind") == "pin-first",
        by_horizon=config.get("policy.horizon"),
        client_policy=ClientPolicy() if config.get("policy.clients") else None,
        hot_guard=config.get("policy.hot_guard"),
    )
    channels: list[Any] = [main] + ([sockets] if sockets else [])
    cpus = workers.cpus() if config.get("policy.by_cpu") else []
    if cpus:
        channels.append(CpuChannel(Learner(kind, threshold), cpus))
    if xdp is not None:
        channels.append(XdpChannel(Learner(kind, threshold), share_policy(config), xdp,
                                   xdp_cpus(config)))  # fmt: skip
    reload = None
    if config.get("model.path") and config.get("model.reload_s") > 0:
        from tuner.agent.reload import ModelReload

        reload = ModelReload(
            config.get("model.path"),
            config.get("agent.window_ms"),
            config.get("model.reload_s"),
            config.get("model.trial_windows"),
            current=model.version,  # model.path set: the OfflineModel load_model gave
        )
    return Agent(config, channels, mode, reload)
