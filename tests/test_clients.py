"""Heavy clients: the client-mix profile, the client cost model, the placement policy and the
checks around them (pure Python; the kernel side is in test_steer_reuseport.py and
test_experiment.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tuner.actuate.steering import NullSteering
from tuner.agent.build import build_agent
from tuner.agent.config import AgentConfig
from tuner.agent.sockets import SocketTable
from tuner.agent.workers import WorkerMap
from tuner.errors import TunerError
from tuner.experiment.load import load_spec
from tuner.experiment.spec import ExperimentSpec
from tuner.learn.clients import ClientCosts, WorkerBytes
from tuner.policy.clients import ClientPolicy
from tuner.probes.base import Frame
from tuner.workload.profiles import Profile


def test_client_mix_costs_have_mean_one_and_a_few_heavy_clients():
    p = Profile("client-mix", connections=32, seed=5, heavy_share=0.125, heavy_factor=8.0)
    c = p.costs()
    assert c.mean() == pytest.approx(1.0)
    assert sorted(set(np.round(c / c.min(), 6))) == [1.0, 8.0]
    assert (c > 1).sum() == 4
    # with 8 clients over 32 connections, a client's connections share its cost
    shared = Profile("client-mix", connections=32, seed=5, clients=8).costs()
    assert all(shared[i] == shared[i % 8] for i in range(32))
    assert np.all(Profile("uniform", connections=4).costs() == 1.0)


def _simulate(costs: ClientCosts, windows: int, seed: int = 1, noise: float = 0.1):
    """32 clients, 4 of them 8x as costly, over 4 workers; connections move every ~10
    windows. Returns the heavy clients' addresses."""
    rng = np.random.default_rng(seed)
    n, w = 32, 4
    heavy = set(rng.choice(n, 4, replace=False).tolist())
    cost = np.array([8.0 if i in heavy else 1.0 for i in range(n)]) * 1e-4
    where = rng.integers(0, w, n)
    for _ in range(windows):
        moved = rng.random(n) < 0.1
        where[moved] = rng.integers(0, w, moved.sum())
        sent = rng.poisson(2.0, n) * 100.0
        workers = []
        for k in range(w):
            got = {f"10.0.0.{i}": sent[i] for i in range(n) if where[i] == k and sent[i] > 0}
            load = sum(cost[int(a.split(".")[-1])] * b for a, b in got.items())
            workers.append(WorkerBytes(load * (1 + noise * rng.standard_normal()), got))
        costs.update(workers)
    return {f"10.0.0.{i}" for i in heavy}


def test_client_costs_find_the_heavy_clients_and_explain_the_loads_better():
    costs = ClientCosts()
    heavy = _simulate(costs, 300)
    assert set(costs.heavy()) == heavy
    s = costs.scores()
    assert s.windows > 200 and s.clients == 32 and s.heavy == 4
    assert s.mae < 0.5 * s.baseline_mae  # knowing the client explains the load


def test_client_costs_find_clients_heavy_by_volume_alone():
    # every byte costs the same, but 3 of 32 clients send 10x the requests of the others
    # (heavy hitters as clients): their connections are the heavy ones
    rng = np.random.default_rng(3)
    n, w = 32, 4
    rate = np.full(n, 1.0)
    rate[[5, 11, 20]] = 10.0
    where = rng.integers(0, w, n)
    costs = ClientCosts()
    for _ in range(200):
        moved = rng.random(n) < 0.1
        where[moved] = rng.integers(0, w, moved.sum())
        sent = rng.poisson(rate) * 100.0
        workers = []
        for k in range(w):
            got = {f"10.0.0.{i}": sent[i] for i in range(n) if where[i] == k and sent[i] > 0}
            workers.append(WorkerBytes(1e-4 * sum(got.values()), got))
        costs.update(workers)
    assert set(costs.heavy()) == {"10.0.0.5", "10.0.0.11", "10.0.0.20"}


def test_client_costs_call_nobody_heavy_when_nobody_is():
    costs = ClientCosts()
    for _ in range(100):
        costs.update(
            [
                WorkerBytes(0.02 * len(x), x)
                for x in (
                    {"10.0.0.1": 100.0, "10.0.0.2": 100.0},
                    {"10.0.0.3": 100.0, "10.0.0.4": 100.0},
                )
            ]
        )
    assert costs.heavy() == {}
    assert costs.cost("10.0.0.9") is None


def test_client_costs_forget_the_least_recently_seen_past_the_limit(monkeypatch):
    monkeypatch.setattr("tuner.learn.clients.MAX_CLIENTS", 4)
    costs = ClientCosts()
    for i in range(6):
        costs.update([WorkerBytes(0.1, {f"10.0.1.{i}": 100.0})])
    assert costs.scores().clients == 4
    assert costs.cost("10.0.1.0") is None and costs.cost("10.0.1.5") is not None


def test_placement_spreads_heavy_clients_and_keeps_them_where_they_are():
    p = ClientPolicy()
    d = p.decide({f"10.0.0.{i}": 0.2 for i in range(4)}, [0.1, 0.2, 0.3, 0.4])
    assert sorted(d.placed.values()) == [0, 1, 2, 3]
    again = p.decide({f"10.0.0.{i}": 0.2 for i in range(4)}, [0.4, 0.3, 0.2, 0.1])
    assert again.placed == d.placed  # a new prediction alone does not move anyone
    six = p.decide({f"10.0.0.{i}": 0.2 for i in range(6)}, [0.1] * 4)
    assert sorted(list(six.placed.values()).count(t) for t in range(4)) == [1, 1, 2, 2]
    assert p.decide({}, [0.1] * 4).placed == {}
    assert p.decide({"10.0.0.1": 0.3}, [0.1]).why == "one target"


def test_placement_spreads_heavy_clients_over_cpus_before_workers():
    # 4 workers pinned 2 per CPU (nginx's workers with cpus = [0, 1]): the two heaviest
    # clients go to different CPUs, whatever the workers' predicted loads say
    cpus = [0, 1, 0, 1]
    d = ClientPolicy().decide({"a": 0.3, "b": 0.3, "c": 0.1}, [0.1, 0.5, 0.2, 0.6], cpus)
    assert cpus[d.placed["a"]] != cpus[d.placed["b"]]
    assert d.placed["c"] not in (d.placed["a"], d.placed["b"])
    # unpinned workers are each a CPU of their own, as before
    free = ClientPolicy().decide({"a": 0.3, "b": 0.3}, [0.1, 0.5, 0.2, 0.6], [None] * 4)
    assert free.placed == {"a": 0, "b": 2}


def test_socket_table_counts_bytes_per_client_and_worker():
    t = SocketTable(WorkerMap.from_pids([7, 8]))

    def f(sk, pid, peer, b):
        return Frame("net", sk, 0, 100, {"bytes_in": b},
                     {"tgid": str(pid), "proto": "tcp", "state": "1", "raddr": peer})  # fmt: skip

    w = t.update([f("sock:a", 7, "10.0.0.1", 300.0), f("sock:b", 7, "10.0.0.1", 100.0),
                  f("sock:c", 8, "10.0.0.2", 50.0)], {0: 0.5, 1: 0.1})  # fmt: skip
    assert w.by_client == {0: {"10.0.0.1": 400.0}, 1: {"10.0.0.2": 50.0}}


def test_policy_clients_needs_the_sockets_channel_and_a_reuseport_group():
    with pytest.raises(TunerError, match="set agent.sockets = true"):
        AgentConfig.from_dict({"policy": {"clients": True}})
    cfg = AgentConfig.from_dict({"agent": {"sockets": True}, "policy": {"clients": True}})

    class NoClients(NullSteering):
        @property
        def places_clients(self) -> bool:
            return False

    with pytest.raises(TunerError, match="set policy.clients = false"):
        build_agent(cfg, WorkerMap.from_pids([1, 2]), NoClients(2))
    agent = build_agent(cfg, WorkerMap.from_pids([1, 2]), NullSteering(2))
    assert agent.workers.client_policy is not None


def test_client_mix_specs_are_checked_and_give_each_connection_an_address():
    with pytest.raises(TunerError, match="at most 250 connections"):
        ExperimentSpec.from_dict({"workload": {"profile": "client-mix", "connections": 251}})
    with pytest.raises(TunerError, match="added to the namespaces the runner creates only"):
        ssh = {"server_hosts": ["a"], "client_hosts": ["b"]}
        ExperimentSpec.from_dict({"workload": {"profile": "client-mix"}, "cluster": ssh})
    with pytest.raises(TunerError, match="TCP connections only"):
        ExperimentSpec.from_dict({"workload": {"profile": "client-mix"},
                                  "server": {"protocol": "udp"}})  # fmt: skip
    with pytest.raises(TunerError, match="TCP connections only"):
        spec = ExperimentSpec.from_dict({"server": {"protocol": "udp"}})
        spec.with_value("workload.profile", "client-mix", "--profile")
    with pytest.raises(TunerError, match="at most 250 connections"):
        ExperimentSpec.from_dict({"workload": {"addresses": "connection", "connections": 251}})
    spec = ExperimentSpec.from_dict({"workload": {"profile": "client-mix"}})
    cfg = load_spec(spec, 0, 5.0, "198.18.0.1", None, 500.0, None, ("198.18.32.1", "198.18.32.2"))
    assert cfg["sources"] == ["198.18.32.1", "198.18.32.2"]
    assert cfg["profile_args"]["heavy_factor"] == 8.0
    uniform = load_spec(spec, 0, 5.0, "198.18.0.1", None, 500.0, "uniform", ("198.18.32.1",))
    assert uniform["sources"] == []  # calibration under another profile: the host's address
    # any profile, each connection from an address of its own: heavy hitters as clients
    own = {"workload": {"profile": "heavy-hitters", "addresses": "connection"}}
    spec = ExperimentSpec.from_dict(own)
    cfg = load_spec(spec, 0, 5.0, "198.18.0.1", None, 500.0, None, ("198.18.32.1",))
    assert cfg["sources"] == ["198.18.32.1"] and cfg["profile"] == "heavy-hitters"
    assert load_spec(spec, 0, 5.0, "198.18.0.1", None, 500.0, "uniform", ("198.18.32.1",))[
        "sources"
    ] == ["198.18.32.1"]


def test_status_shows_the_client_model():
    from tuner.agent.cli import _status_text
    from tuner.bench.loop import frames_for

    cfg = AgentConfig.from_dict({"agent": {"sockets": True}, "policy": {"clients": True}})
    agent = build_agent(cfg, WorkerMap.from_pids([1, 2]), NullSteering(2))
    for w in range(3):
        agent.step(frames_for(2, w))
    status = agent.status()
    assert status["clients"] == {"followed": 0, "heavy": 0, "windows": 0, "mae": None,
                                 "baseline_mae": None}  # fmt: skip
    assert "clients     0 followed, 0 heavy" in _status_text(status)
