"""XDP steering on veth pairs between network namespaces: real packets, real redirects."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from helpers import rx_packets, topology

from tuner import bcc_runtime
from tuner.actuate.xdp import XdpSteering
from tuner.bpfsys import ProgType
from tuner.netns import inside

pytestmark = pytest.mark.kernel
NOOP = "int rx_noop(struct xdp_md *ctx) { return XDP_PASS; }"

CLIENT = """
import socket, sys
c = socket.create_connection(("198.19.252.1", 7500), timeout=5)
c.sendall(b"a"); assert c.recv(1) == b"a"
print("connected", flush=True)
sys.stdin.readline()                      # the test writes a table meanwhile
c.sendall(b"b"); assert c.recv(1) == b"b"
print("still connected", flush=True)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in range(20000, 20000 + {flows}):
    v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v.bind(("198.19.252.2", port))
    v.sendto(b"x", ("198.19.252.1", 9))
    v.close()
print("sent", flush=True)
"""

SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.19.252.1", 7500)); s.listen()
print("ready", flush=True)
c, _ = s.accept()
while data := c.recv(1):
    c.sendall(data)
"""


def test_new_flows_go_to_table_targets_and_an_open_connection_survives():
    flows = 200
    links = [
        ("c", "c0", "lb", "l0", "198.19.252.2/24", "198.19.252.1/24"),
        ("lb", "l1", "b1", "b1", None, None),
        ("lb", "l2", "b2", "b2", None, None),
    ]
    with topology(links) as ns:
        # redirect targets of native XDP on veth need NAPI on the peer: a no-op program on it
        receivers = bcc_runtime.compile_program(text=NOOP)
        noop = bcc_runtime.load_function(receivers, "rx_noop", ProgType.XDP)
        for name in ("b1", "b2"):
            with inside(ns[name]):
                receivers.attach_xdp(name, noop, 0)
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns["lb"], sys.executable, "-c", SERVER],
            stdout=subprocess.PIPE,
            text=True,
        )
        client = None
        try:
            assert server.stdout.readline().strip() == "ready"
            with XdpSteering(
                name="t-veth", ifname="l0", netns=ns["lb"], devices=["l1", "l2"], mode="active"
            ) as steer:
                client = subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns["c"],
                        sys.executable,
                        "-c",
                        textwrap.dedent(CLIENT.format(flows=flows)),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert client.stdout.readline().strip() == "connected"  # no table: passed
                rx_before = [rx_packets(ns[n], n) for n in ("b1", "b2")]
                steer.apply([0] * 128 + [1] * 128)
                client.stdin.write("go\n")
                client.stdin.flush()
                assert client.stdout.readline().strip() == "still connected"
                assert client.stdout.readline().strip() == "sent"
                client.wait(timeout=30)
                counters = steer.counters()
                rx = [
                    rx_packets(ns[n], n) - b for n, b in zip(("b1", "b2"), rx_before, strict=True)
                ]
        finally:
            for p in (client, server):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
            receivers.cleanup()
    assert counters["redirected"] == rx, (counters, rx)
    assert sum(rx) == flows and min(rx) > flows * 0.2
    assert counters["passed_kernel_flow"] >= 2  # the open connection's segments


CRASHER = """
import time
from tuner.actuate.xdp import XdpSteering
s = XdpSteering(name="t-crash", ifname="l0", netns="{ns}", devices=["l1"], mode="active")
s.open()
s.apply([0] * 256)
print("attached", flush=True)
time.sleep(60)
"""


def xdp_attached(ns: str, ifname: str) -> bool:
    out = subprocess.run(
        ["ip", "-n", ns, "link", "show", ifname], capture_output=True, text=True, check=True
    ).stdout
    return " xdp" in out


def test_cleanup_after_sigkill_detaches_and_unpins():
    from pathlib import Path

    from conftest import REPO

    from tuner.actuate.pins import PIN_ROOT, STATE_ROOT

    links = [("lb", "l0", "x", "x0", None, None), ("lb", "l1", "y", "y0", None, None)]
    with topology(links) as ns:
        crasher = subprocess.Popen(
            [sys.executable, "-c", CRASHER.format(ns=ns["lb"])],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert crasher.stdout.readline().strip() == "attached"
            crasher.kill()
            crasher.wait()
            assert xdp_attached(ns["lb"], "l0")  # a killed tuner leaves XDP attached ...
            assert Path(PIN_ROOT, "t-crash").exists()
            out = subprocess.run(
                [sys.executable, "-m", "tuner", "cleanup"],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "t-crash: XDP detached from l0; pins removed" in out
            assert not xdp_attached(ns["lb"], "l0")  # ... until tuner cleanup
            assert not Path(PIN_ROOT, "t-crash").exists()
            assert not Path(STATE_ROOT, "t-crash.json").exists()
        finally:
            if crasher.poll() is None:
                crasher.kill()
                crasher.wait()
            subprocess.run(
                [sys.executable, "-m", "tuner", "cleanup"], cwd=REPO, capture_output=True
            )
