"""Backend hosts behind an XDP-steered entry: the kernel's ECMP default, XDP sending each new
flow to the backend its table names (the frame re-addressed to that host), and flows that
keep their backend when the lease lapses."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tuner.actuate.xdp import XdpSteering, interface_mac
from tuner.cluster import Cluster
from tuner.cluster.topology import VIP
from tuner.netns import inside

pytestmark = pytest.mark.kernel

# Opens `n` connections to the service, one request each, and prints which worker answered
# each; with `keep`, holds them open until a line on stdin, then asks each once more.
CLIENT = f"""
import json, socket, sys
from tuner.workload.protocol import REQUEST, RESPONSE
n, keep = int(sys.argv[1]), sys.argv[2] == "keep"
def ask(c, rid):
    c.sendall(REQUEST.pack(rid, 10))
    data = b""
    while len(data) < RESPONSE.size:
        more = c.recv(64)
        if not more:
            raise SystemExit("connection closed")
        data += more
    return RESPONSE.unpack(data)[1]
conns = [socket.create_connection(("{VIP}", 8000), timeout=5) for _ in range(n)]
print(json.dumps([ask(c, i) for i, c in enumerate(conns)]), flush=True)
if keep:
    sys.stdin.readline()
    print(json.dumps([ask(c, i) for i, c in enumerate(conns)]), flush=True)
"""


def _client(cluster: Cluster, n: int, keep: bool = False) -> subprocess.Popen:
    return cluster.popen(
        "client0",
        [sys.executable, "-c", textwrap.dedent(CLIENT), str(n), "keep" if keep else "once"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _answers(proc: subprocess.Popen) -> list[int]:
    line = proc.stdout.readline()
    assert line, "the client failed"
    return json.loads(line)


def test_xdp_sends_new_flows_to_the_chosen_backend_and_placed_flows_survive_a_lapse():
    with Cluster(clients=1, backends=2) as cluster:
        for i, b in enumerate(cluster.by_role("backend")):
            server = cluster.popen(
                b,
                [sys.executable, "-m", "tuner.workload.server", "--workers", "1",
                 "--first-index", str(i)],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            assert "workers" in server.stdout.readline()
        # the kernel's default: ECMP spreads connections over both backends
        assert set(_answers(_client(cluster, 40))) == {0, 1}
        macs = []
        for b in cluster.by_role("backend"):
            with inside(b.netns):
                macs.append(interface_mac("eth0").hex(":"))
        with XdpSteering(
            name="t-backends",
            ifname="eth0",
            netns=cluster.host("server").netns,
            devices=["eth0", "eth0"],
            macs=macs,
            mode="active",
            lease_ms=60000,
        ) as steer:
            steer.apply([1] * 256)
            held = _client(cluster, 24, keep=True)
            assert _answers(held) == [1] * 24  # every new flow went to backend 1
            steer.expire()  # the lease lapses: new flows are the kernel's again ...
            assert set(_answers(_client(cluster, 40))) == {0, 1}
            held.stdin.write("again\n")
            held.stdin.flush()
            assert _answers(held) == [1] * 24  # ... but the placed ones stay on backend 1
            counters = steer.counters()
        assert counters["redirected"][0] == 0 and counters["redirected"][1] > 24 * 3
        assert counters["passed_default"] > 0
