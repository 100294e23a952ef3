"""Hot UDP flows: counted per flow in the kernel, pinned apart by the agent (real kernel)."""

from __future__ import annotations

import os
import select
import socket
import time

import pytest

from tuner.actuate.reuseport import ReuseportSteering
from tuner.agent.build import build_agent
from tuner.agent.channel import Measurement
from tuner.agent.config import AgentConfig
from tuner.agent.workers import WorkerMap

pytestmark = pytest.mark.kernel


@pytest.fixture
def group():
    """Two bound UDP sockets of one SO_REUSEPORT group on loopback, and their port."""
    socks = []
    try:
        for _ in range(2):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", socks[0].getsockname()[1] if socks else 0))
            s.setblocking(False)
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def _client(port: int) -> socket.socket:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.connect(("127.0.0.1", port))
    return c


def _received(socks: list[socket.socket], expect: int) -> list[dict[bytes, int]]:
    """The ``expect`` datagrams sent to the group, per socket by payload (waits for them)."""
    out: list[dict[bytes, int]] = [{} for _ in socks]
    deadline = time.monotonic() + 30
    while sum(n for got in out for n in got.values()) < expect:
        assert time.monotonic() < deadline, out
        ready, _, _ = select.select(socks, [], [], 1.0)
        for s in ready:
            got = out[socks.index(s)]
            while True:
                try:
                    msg = s.recv(64)
                except BlockingIOError:
                    break
                got[msg] = got.get(msg, 0) + 1
    return out


def _send(c: socket.socket, payload: bytes, n: int) -> None:
    for _ in range(n):
        c.send(payload)


def test_datagrams_are_counted_per_flow_and_an_override_pins_a_flow(group):
    port = group[0].getsockname()[1]
    a, b = _client(port), _client(port)
    with ReuseportSteering(name=f"t-hot-{os.getpid()}", sockets=group, mode="active") as st:
        assert st.count_flows
        _send(a, b"a", 30)
        _send(b, b"b", 10)
        _received(group, 40)
        hits = st.flow_hits()
        assert sorted(hits.values()) == [10, 30] and st.flow_hits() == {}  # read and cleared
        ha = next(h for h, n in hits.items() if n == 30)
        st.apply([0] * 256)
        assert st.set_overrides({ha: 1}) and st.overrides() == {ha: 1}
        _send(a, b"a", 20)
        _send(b, b"b", 20)
        assert _received(group, 40) == [{b"b": 20}, {b"a": 20}]  # a pinned, b by the table
        st.set_overrides({})
        _send(a, b"a", 5)
        assert _received(group, 5) == [{b"a": 5}, {}] and st.overrides() == {}
        st.set_mode("shadow")
        assert not st.set_overrides({ha: 1}) and st.overrides() == {}  # recorded only
        assert st.override_log[-1][1:] == ("shadow", {ha: 1})
    a.close()
    b.close()


def test_agent_pins_two_hot_flows_that_share_a_worker_apart(group):
    port = group[0].getsockname()[1]
    clients = [_client(port) for _ in range(3)]
    cfg = AgentConfig.from_dict(
        {
            "model": {"kind": "last", "warmup_windows": 0},
            "policy": {"kind": "pin-first"},  # the table sends every slot to worker 0
            "guard": {"enabled": False},
        }
    )
    extra = {e: {"runq_frac": 0.0} for e in ("worker:0", "worker:1")}
    with ReuseportSteering(name=f"t-hot-a-{os.getpid()}", sockets=group, mode="active") as st:
        workers = WorkerMap.from_pids([os.getpid(), os.getpid()], cpus=[None, None])
        agent = build_agent(cfg, workers, st, "active")
        for _ in range(4):
            for c, payload, n in zip(clients, (b"x", b"y", b"z"), (60, 60, 5), strict=True):
                _send(c, payload, n)
            # each worker's load: its share of the datagrams that reached it, as a CPU would see
            per_worker = [sum(g.values()) for g in _received(group, 125)]
            loads = {f"worker:{i}": 0.9 * n / 125 for i, n in enumerate(per_worker)}
            measured = {"workers": Measurement(loads, extra, st.flow_hits())}
            record = agent.step_measured(measured, fresh=True)
        assert record.workers.flows.hot == 2 and sorted(st.overrides().values()) == [0, 1]
        for c, payload in zip(clients, (b"x", b"y", b"z"), strict=True):
            _send(c, payload, 10)
        got = _received(group, 30)
        # one hot flow moved to worker 1; the other and the cold flow follow the table
        assert sum(got[1].values()) == 10 and set(got[1]) <= {b"x", b"y"}
        assert got[0].get(b"z") == 10
    for c in clients:
        c.close()
