"""Real server shapes on the real kernel (issue 17): threads that each own a socket (the
reference server's --threads, TCP and UDP, and HAProxy from Debian), and nginx's pre-fork
workers, found by discovery, steered by the agent, and followed when they change (a thread
pool that grows, an nginx reload, a crashed nginx worker respawned). Each test starts its
own server in a test namespace and stops it, and checks that nothing is left.

Steering is checked by counting: with ``policy.kind = "pin-first"`` every new connection goes
to target 0, so every answer must come from the worker that discovery says serves socket 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO
from helpers import Agent, wait_for

from tuner.actuate.pins import PIN_ROOT, read_pins
from tuner.agent.decisions import by_entity
from tuner.cluster import Cluster
from tuner.group import Group, discover
from tuner.netns import netns_link
from tuner.workload.nginx import Nginx

pytestmark = pytest.mark.kernel
PORT = 8000
FILE = "/cost/0.txt"  # a 1 KiB file of the nginx instance's document root
PINNED = {  # every new connection to target 0, decided from the first window
    "policy": {"kind": "pin-first"},
    "model": {"kind": "last", "warmup_windows": 0},
    "guard": {"enabled": False},
}


def asker(c: Cluster, kind: str, n: int, port: int = PORT, path: str = "/") -> subprocess.Popen:
    """``n`` requests from the client host, a new connection each, in a child process that
    prints the worker of each (None: the request failed)."""
    script = str(REPO / "tests" / "scripts" / "count_workers.py")
    argv = [sys.executable, script, kind, c.host("server").address, str(port), str(n), path]
    return c.popen("client0", argv, stdout=subprocess.PIPE, text=True)


def ask(c: Cluster, kind: str, n: int = 30, port: int = PORT, path: str = "/") -> list:
    out, _ = asker(c, kind, n, port, path).communicate(timeout=120)
    return json.loads(out)


def group(c: Cluster, port: int = PORT, protocol: str = "tcp") -> Group:
    return discover(port, protocol, netns_link(c.host("server").netns))


def steered(agent: Agent) -> None:
    """Wait until the agent's table is in the kernel."""
    wait_for(lambda: read_pins(agent.name)["generation"] > 0)


def target0(c: Cluster, port: int = PORT, protocol: str = "tcp") -> str:
    w = group(c, port, protocol).sockets[0].worker
    return str(w.pid if w.tid is None else w.tid)


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_threads_of_one_process_are_steered_and_a_growing_pool_followed(tmp_path, protocol):
    with Cluster(clients=1) as c:
        argv = [sys.executable, "-m", "tuner.workload.server", "--threads", "--workers", "2",
                "--work", "sleep"] + (["--udp"] if protocol == "udp" else [])  # fmt: skip
        srv = c.popen("server", argv, stdout=subprocess.PIPE, text=True)
        info = json.loads(srv.stdout.readline())
        g = group(c, protocol=protocol)
        assert g.shape == "threads" and [s.worker.tid for s in g.sockets] == sorted(info["threads"])
        ns = c.host("server").netns
        agent = Agent(tmp_path, [], "active", target={"netns": ns, "protocol": protocol}, **PINNED)
        try:
            assert agent.status()["workers"] == [
                f"worker:{i}={info['workers'][0]}/{s.worker.tid}" for i, s in enumerate(g.sockets)
            ]
            steered(agent)
            index = info["threads"].index(g.sockets[0].worker.tid)  # thread i answers as i
            assert set(ask(c, protocol)) == {index}
            os.kill(info["workers"][0], signal.SIGUSR1)  # the pool grows by a thread
            grown = json.loads(srv.stdout.readline())["threads"]
            wait_for(lambda: agent.status()["entities"] == 3)
            changes = wait_for(lambda: _logged_changes(agent))  # the status changes first
            assert "2 -> 3 sockets" in changes[-1][0]
            steered(agent)
            index = grown.index(group(c, protocol=protocol).sockets[0].worker.tid)
            wait_for(lambda: set(ask(c, protocol, 10)) == {index})
        finally:
            done = agent.stop()
            srv.kill()
    assert done.returncode == 0, done.stderr
    assert not Path(PIN_ROOT, agent.name).exists()


def test_connections_of_thread_workers_are_followed_by_their_serving_thread(tmp_path):
    """``agent.sockets`` with threads as workers: each connection belongs to the thread that
    serves it. All new connections go to thread 0 (pin-first), so the connections the agent
    follows, and the load that leaves with those that close, are worker 0's alone."""
    with Cluster(clients=1) as c:
        argv = [sys.executable, "-m", "tuner.workload.server", "--threads", "--workers", "2"]
        srv = c.popen("server", argv, stdout=subprocess.PIPE, text=True)
        pid = json.loads(srv.stdout.readline())["workers"][0]
        ns = c.host("server").netns
        agent = Agent(tmp_path, [], "active", target={"netns": ns}, agent={"sockets": True},
                      **PINNED)  # fmt: skip
        spec = {"host": c.host("server").address, "rate": 150, "seconds": 600,
                "connections": 8, "service": "exp:1000", "lifetime_s": 0.3}  # fmt: skip
        gen = None
        try:
            steered(agent)
            gen = c.popen("client0", [sys.executable, "-m", "tuner.workload.loadgen", "--config",
                                      json.dumps(spec)], stdout=subprocess.DEVNULL)  # fmt: skip
            wait_for(lambda: len(_lost_to_closes(agent, "worker:0")) >= 5, seconds=90)
        finally:
            if gen is not None:
                gen.kill()
                gen.wait()
            done = agent.stop()
            srv.kill()
    assert done.returncode == 0, done.stderr
    followed = [e for e in agent.entries() if e.get("sockets", {}).get("followed")]
    assert followed and all(int(sk.split(":")[1]) == pid for e in followed
                            for sk in e["sockets"]["hottest"])  # fmt: skip
    assert not _lost_to_closes(agent, "worker:1")  # thread 1 served no connection


def _lost_to_closes(agent: Agent, worker: str) -> list:
    """Windows in which ``worker`` had load and part of it left with connections that closed
    (its ``live_load`` below its load): only a worker its connections are attributed to."""
    out = []
    for e in agent.entries():
        if "sockets" not in e:
            continue
        load = by_entity(e["workers"], "loads")[worker]
        live = by_entity(e["workers"], "features")[worker]["live_load"]
        if load > 0.01 and live < load * 0.99:
            out.append(e)
    return out


def _haproxy(root: Path, address: str, threads: int) -> Path:
    cfg = root / "haproxy.cfg"
    cfg.write_text(f"""global
    nbthread {threads}
defaults
    mode http
    timeout client 10s
    timeout connect 5s
    timeout server 10s
frontend fe
    bind {address}:{PORT} shards by-thread
    http-request return status 200 content-type text/plain lf-string "%[thread]"
""")
    return cfg


def test_haproxy_threads_from_debian_are_steered(tmp_path):
    with Cluster(clients=1) as c:
        cfg = _haproxy(tmp_path, c.host("server").address, threads=2)
        proxy = c.popen("server", ["haproxy", "-W", "-db", "-f", str(cfg)])
        try:
            wait_for(lambda: len(_try_group(c)) == 2)
            g = group(c)
            assert g.shape == "threads" and len({s.worker.tid for s in g.sockets}) == 2
            assert len(set(ask(c, "http", 30))) == 2  # the kernel's hash: both threads
            ns = c.host("server").netns
            agent = Agent(tmp_path, [], "active", target={"netns": ns}, **PINNED)
            try:
                steered(agent)
                assert len(set(ask(c, "http", 30))) == 1  # pinned: one thread takes them all
            finally:
                done = agent.stop()
        finally:
            proxy.terminate()
            proxy.wait(timeout=30)
    assert done.returncode == 0, done.stderr


def _logged_changes(agent: Agent) -> list:
    """The worker changes in the agent's decision log. The status shows a change as soon as
    the agent retargets; the log line comes with the next window, so a test waits for it."""
    return [e["changes"] for e in agent.entries() if "changes" in e]


def _try_group(c: Cluster, port: int = PORT) -> list:
    try:
        return list(group(c, port).sockets)
    except Exception:
        return []


@contextlib.contextmanager
def nginx_running(tmp_path: Path, workers: int = 4) -> Iterator[tuple[Cluster, Nginx]]:
    """nginx from Debian with ``workers`` reuseport workers in a test cluster's server host,
    once discovery finds them all; stopped (and checked stopped) on the way out."""
    with Cluster(clients=1) as c:
        nginx = Nginx(tmp_path / "nginx", PORT, workers=workers, address=c.host("server").address)
        nginx.start(lambda argv: c.popen("server", argv))
        try:
            wait_for(lambda: len(_try_group(c)) == workers)
            yield c, nginx
        finally:
            nginx.stop()
    assert nginx.proc.poll() is not None


@contextlib.contextmanager
def pinning_agent(tmp_path: Path, c: Cluster) -> Iterator[Agent]:
    """An active agent on the server host's group sending every new connection to target 0,
    its table in the kernel; stopped on the way out, which must leave no pin behind."""
    agent = Agent(tmp_path, [], "active", target={"netns": c.host("server").netns}, **PINNED)
    try:
        steered(agent)
        yield agent
    finally:
        done = agent.stop()
    assert done.returncode == 0, done.stderr
    assert not Path(PIN_ROOT, agent.name).exists()


def test_nginx_workers_are_found_steered_and_followed_through_a_reload(tmp_path):
    with nginx_running(tmp_path) as (c, nginx):
        g = group(c)
        pids = sorted(s.worker.pid for s in g.sockets)
        assert g.shape == "prefork" and nginx.proc.pid not in pids  # the master serves none
        assert len(set(ask(c, "http", 40, path=FILE))) >= 3  # the kernel's hash spreads them
        with pinning_agent(tmp_path, c) as agent:
            assert set(ask(c, "http", 30, path=FILE)) == {target0(c)}
            placed = agent.status()["placed"]["workers"]  # the steering program's own count
            assert placed["by_target"][0] >= 30 and sum(placed["by_target"][1:]) == 0, placed
            # a reload: new workers, the same sockets; requests go on meanwhile
            during = asker(c, "http", 300, path=FILE)
            nginx.reload()
            wait_for(lambda: not set(agent.status()["pids"]) & set(pids), seconds=60)
            answers = json.loads(during.communicate(timeout=120)[0])
            assert None not in answers  # no request failed across the reload
            changes = wait_for(lambda: _logged_changes(agent))
            assert "workers changed" in changes[-1][0]
            steered(agent)
            wait_for(lambda: set(ask(c, "http", 10, path=FILE)) == {target0(c)})


def test_a_crashed_nginx_worker_respawned_by_its_master_is_followed(tmp_path):
    # the worker of socket 0 (every new connection's target) dies; nginx's master forks a
    # new one, which serves the same socket: the agent must find it and steer to it (its
    # target index follows the socket, whatever order discovery lists the sockets in now)
    with nginx_running(tmp_path) as (c, _), pinning_agent(tmp_path, c) as agent:
        first = group(c).sockets[0]
        victim = str(first.worker.pid)
        assert set(ask(c, "http", 10, path=FILE)) == {victim}
        os.kill(first.worker.pid, signal.SIGKILL)

        def server_of_socket0() -> str | None:
            by_inode = {s.inode: s.worker.pid for s in _try_group(c)}
            pid = by_inode.get(first.inode)
            return str(pid) if pid and str(pid) != victim else None

        respawned = wait_for(server_of_socket0, seconds=60)
        wait_for(lambda: int(respawned) in agent.status()["pids"], seconds=60)
        assert int(victim) not in agent.status()["pids"]
        changes = wait_for(lambda: _logged_changes(agent))
        assert "workers changed" in changes[-1][0] and victim in changes[-1][0]
        wait_for(lambda: set(ask(c, "http", 10, path=FILE)) == {respawned})


def test_observe_port_watches_the_nginx_workers_not_its_master(tmp_path):
    # `tuner observe --port` takes its processes from group discovery: nginx's master holds
    # every socket but serves none, so it is not observed
    with nginx_running(tmp_path, workers=2) as (c, nginx):
        workers = ", ".join(str(p) for p in sorted(s.worker.pid for s in group(c).sockets))
        proc = subprocess.run(
            [sys.executable, "-m", "tuner", "observe", "--port", str(PORT), "--netns",
             c.host("server").netns, "--probes", "sched", "--json", "--seconds", "0.5"],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    err = proc.stderr
    assert proc.returncode == 0, err
    said = f"port {PORT}: prefork reuseport group over tcp, 2 sockets; observing its workers "
    assert said + workers + " " in err, err
    assert str(nginx.proc.pid) not in err.split(said)[1].split("\n")[0]
