"""sk_reuseport steering on the real kernel: tables, lease, shadow, SIGKILL, unmodified server."""

from __future__ import annotations

import collections
import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO
from helpers import netns_pair, wait_for

from tuner.actuate.pins import PIN_ROOT, STATE_ROOT, read_pins
from tuner.actuate.reuseport import ReuseportSteering
from tuner.errors import TunerError

pytestmark = pytest.mark.kernel
HERE = Path(__file__).parent / "scripts"
PORT = 7400
K = 4


@pytest.fixture
def server():
    """K worker processes listening on PORT inside a fresh network namespace."""
    with netns_pair(subnet="198.19.251") as (ns, addr, _nsb, _addrb):
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                str(HERE / "reuseport_server.py"),
                addr,
                str(PORT),
                str(K),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            pids = json.loads(proc.stdout.readline())
            yield ns, addr, pids
        finally:
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def client_cmd(ns: str, addr: str, seconds: float) -> list[str]:
    """The connect loop of scripts/reuseport_client.py, run inside namespace ``ns``."""
    return [
        "ip",
        "netns",
        "exec",
        ns,
        sys.executable,
        str(HERE / "reuseport_client.py"),
        addr,
        str(PORT),
        str(seconds),
    ]


def connect_many(ns: str, addr: str, seconds: float) -> list[tuple[float, int]]:
    out = subprocess.run(
        client_cmd(ns, addr, seconds),
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    return [tuple(x) for x in json.loads(out.stdout.splitlines()[-1])]


def by_worker(samples) -> collections.Counter:
    return collections.Counter(w for _, w in samples)


def test_table_steers_then_lease_expiry_returns_to_kernel_hashing(server):
    ns, addr, pids = server
    # a lease long enough for a client to start and connect on a busy machine (the kernel
    # tests run in two groups at once), short enough to wait out
    lease = 3000
    with ReuseportSteering(
        name="t-table", pids=pids, port=PORT, mode="active", lease_ms=lease
    ) as st:
        assert by_worker(connect_many(ns, addr, 0.6)).keys() == set(range(K))  # no table yet
        st.apply([2] * 128 + [3] * 128)
        steered = by_worker(connect_many(ns, addr, 0.3))
        assert set(steered) <= {2, 3} and -1 not in steered
        assert st.counters()["selected"][2] + st.counters()["selected"][3] == sum(steered.values())
        wait_for(lambda: read_pins("t-table")["lease_left_ms"] < -10)  # lapsed, ticks too
        after = by_worker(connect_many(ns, addr, 0.6))
        assert set(after) == set(range(K))
        assert st.counters()["fallback_lease"] >= sum(after.values())


def test_shadow_mode_records_but_leaves_kernel_maps_untouched(server):
    ns, addr, pids = server
    with ReuseportSteering(name="t-shadow", pids=pids, port=PORT, mode="shadow") as st:
        before = st.live_table()
        d = st.apply([1] * 256)
        assert not d.written and st.decisions[-1].table == [1] * 256
        assert st.live_table() == before == (0, [0] * 256)
        assert set(by_worker(connect_many(ns, addr, 0.5))) == set(range(K))
        st.set_mode("active")
        st.apply([1] * 256)
        assert st.live_table() == (1, [1] * 256)
        assert set(by_worker(connect_many(ns, addr, 0.2))) == {1}
        st.set_mode("shadow")
        st.apply([0] * 256)  # recorded, not written
        assert st.live_table() == (1, [1] * 256)


def test_table_swaps_are_whole(server):
    _ns, _addr, pids = server
    with ReuseportSteering(name="t-swap", pids=pids, port=PORT, mode="active") as st:
        for g in range(1, 6):
            st.apply([g % K] * 256)
            assert st.live_table() == (g, [g % K] * 256)


def test_guardrails_refuse_bad_tables(server):
    _ns, _addr, pids = server
    with ReuseportSteering(
        name="t-guard", pids=pids, port=PORT, mode="active", min_share=0.1
    ) as st:
        with pytest.raises(TunerError, match="not in the group"):
            st.apply([K] * 256)
        with pytest.raises(TunerError, match="below the minimum"):
            st.apply([0] * 256)
        assert st.live_table()[0] == 0  # nothing was written


TUNER_CHILD = """
import sys, time
from tuner.actuate.reuseport import ReuseportSteering
st = ReuseportSteering(name="t-kill", pids={pids}, port={port}, mode="active", lease_ms=500)
st.open()
st.apply([0] * 256)
print("steering", flush=True)
while True:
    time.sleep(0.1)
    st.renew()
"""


def test_sigkill_loses_no_connection_and_kernel_takes_over(server):
    ns, addr, pids = server
    tuner = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(TUNER_CHILD.format(pids=pids, port=PORT))],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    client = None
    try:
        assert tuner.stdout.readline().strip() == "steering"
        client = subprocess.Popen(
            client_cmd(ns, addr, 6),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdout.readline().strip() == "start"
        started = time.monotonic()
        time.sleep(1.0)  # steered for a second (by the measured clock below, not assumed)
        tuner.send_signal(signal.SIGKILL)
        killed_at = time.monotonic() - started  # on the client's clock (it started later)
        tuner.wait()
        assert killed_at + 1.0 < 6, "the client's run ended before the lease could lapse"
        samples = json.loads(client.communicate(timeout=60)[0])
    finally:
        for p in (tuner, client):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        subprocess.run(
            [sys.executable, "-m", "tuner", "cleanup"], cwd=REPO, check=True, capture_output=True
        )
    assert all(w >= 0 for _, w in samples), "a connection failed"
    before = by_worker([s for s in samples if s[0] < killed_at - 0.1])
    assert set(before) == {0}
    late = by_worker([s for s in samples if s[0] > killed_at + 0.5 + 0.3])  # lease + margin
    assert len(late) >= 3, late  # spread by the kernel again
    assert not Path(PIN_ROOT, "t-kill").exists() and not Path(STATE_ROOT, "t-kill.json").exists()


def _accepted(socks: list[socket.socket]) -> list[int]:
    """Index of the socket that accepted each pending connection."""
    out = []
    for i, s in enumerate(socks):
        while True:
            try:
                c, _ = s.accept()
            except BlockingIOError:
                break
            c.close()
            out.append(i)
    return out


def test_owned_sockets_on_loopback():
    socks = []
    for _ in range(3):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 7401))
        s.listen(64)
        s.setblocking(False)
        socks.append(s)
    try:
        with ReuseportSteering(name="t-owned", sockets=socks, mode="active") as st:
            st.apply([1] * 256)
            clients = [socket.create_connection(("127.0.0.1", 7401)) for _ in range(20)]
            accepted = _accepted(socks)
            for c in clients:
                c.close()
            assert accepted == [1] * 20
        assert not Path(PIN_ROOT, "t-owned").exists()
    finally:
        for s in socks:
            s.close()


def test_heavy_clients_are_placed_by_source_address_before_the_table():
    socks = []
    for _ in range(3):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", socks[0].getsockname()[1] if socks else 0))
        s.listen(64)
        s.setblocking(False)
        socks.append(s)
    port = socks[0].getsockname()[1]

    def connect(src: str, n: int) -> list[int]:
        conns = [socket.create_connection(("127.0.0.1", port), source_address=(src, 0))
                 for _ in range(n)]  # fmt: skip
        try:
            return _accepted(socks)
        finally:
            for c in conns:
                c.close()

    try:
        with ReuseportSteering(name="t-clients", sockets=socks, mode="shadow") as st:
            assert st.places_clients
            assert not st.set_clients({"127.0.0.2": 2})  # shadow: nothing written
            assert st.placed_clients() == {}
            st.set_mode("active")
            st.apply([1] * 256)
            assert st.set_clients({"127.0.0.2": 2, "127.0.0.4": 0})
            assert st.placed_clients() == {"127.0.0.2": 2, "127.0.0.4": 0}
            assert connect("127.0.0.2", 12) == [2] * 12  # the client's place, not the table's
            assert connect("127.0.0.3", 12) == [1] * 12  # an unplaced client: the table
            assert st.counters()["client_hits"] == 12
            st.set_clients({"127.0.0.3": 0})  # 127.0.0.2 and .4 lose their place
            assert st.placed_clients() == {"127.0.0.3": 0}
            assert connect("127.0.0.2", 6) == [1] * 6
            assert connect("127.0.0.3", 6) == [0] * 6
            with pytest.raises(TunerError, match="target 5, not in the group of 3"):
                st.set_clients({"127.0.0.2": 5})
            with pytest.raises(TunerError, match="not IPv4"):
                st.set_clients({"::1": 0})
            st.expire()  # no lease: the kernel's hash for every client, placed or not
            assert len(set(connect("127.0.0.3", 30))) > 1
        assert not Path(PIN_ROOT, "t-clients").exists()
    finally:
        for s in socks:
            s.close()


def test_missing_server_is_a_clear_error():
    with pytest.raises(TunerError, match="process 999999999 does not exist"):
        ReuseportSteering(name="t-gone", pids=[999999999], port=1).open()
    assert not Path(PIN_ROOT, "t-gone").exists()
