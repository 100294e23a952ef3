"""Group discovery over /proc as recorded from real servers (``tuner group --record``), and
over edited copies that are ambiguous: each shape gets its map, and where no one-socket,
one-worker map exists, the error says what was found."""

from __future__ import annotations

import copy
import json
import re

import pytest
from conftest import REPO

from tuner.errors import TunerError
from tuner.group import discover
from tuner.group.procfs import RecordedProc

FIXTURES = REPO / "tests" / "fixtures" / "proc"


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def run(data: dict):
    proc = RecordedProc(data["files"], data["links"], data.get("machine", "x86_64"))
    return discover(data["port"], data.get("protocol", "tcp"), data["netns"], proc=proc,
                    sleep=lambda s: None)  # fmt: skip


def epolls(data: dict, pid: int) -> list[str]:
    """The fdinfo paths of a process's epoll instances."""
    return [
        f"{pid}/fdinfo/{path.rsplit('/', 1)[1]}"
        for path, target in data["links"].items()
        if path.startswith(f"{pid}/fd/") and target == "anon_inode:[eventpoll]"
    ]


def test_the_reference_server_is_one_process_per_socket():
    g = run(load("reference-process"))
    assert g.shape == "process" and len(g.sockets) == 3
    assert all(len(s.holders) == 1 and s.worker.tid is None for s in g.sockets)
    assert [s.worker.pid for s in g.sockets] == sorted(s.worker.pid for s in g.sockets)


def test_nginx_workers_are_the_processes_whose_epoll_watches_a_socket():
    data = load("nginx-prefork")
    g = run(data)
    master = min(int(p.split("/")[0]) for p in data["files"] if p.endswith("/comm"))
    assert g.shape == "prefork" and len(g.sockets) == 4
    assert master not in g.pids and len(set(g.pids)) == 4  # the master serves nothing
    assert all(len(s.holders) == 5 for s in g.sockets)  # master and every worker hold each
    assert all(s.worker.comm == "nginx" and len(s.worker.cpus) == 1 for s in g.sockets)


def test_haproxy_threads_are_found_by_their_own_epoll():
    g = run(load("haproxy-threads"))
    assert g.shape == "threads" and len({s.worker.tid for s in g.sockets}) == 3
    assert len({s.worker.pid for s in g.sockets}) == 1


def test_udp_threads_are_found_by_the_socket_they_block_on():
    g = run(load("reference-threads-udp"))
    assert g.protocol == "udp" and g.shape == "threads" and len(g.sockets) == 2


def test_explain_shows_target_socket_worker_command_and_cpus():
    text = run(load("nginx-prefork")).explain()
    assert text.splitlines()[0].startswith("reuseport group 127.0.0.1:8181/tcp: 4 sockets")
    assert re.search(r"^\s+0\s+\d+\s+\d+\s+nginx\s+[01]$", text, re.M), text


def test_two_workers_watching_one_socket_is_ambiguous():
    data = copy.deepcopy(load("nginx-prefork"))
    g = run(data)
    a, b = g.sockets[0].worker.pid, g.sockets[1].worker.pid
    first_a, first_b = epolls(data, a)[0], epolls(data, b)[0]
    data["files"][first_b] += "".join(x + "\n" for x in data["files"][first_a].splitlines()
                                      if x.startswith("tfd:"))  # fmt: skip
    with pytest.raises(TunerError, match=r"cannot tell which worker serves .* sockets") as e:
        run(data)
    assert "held by" in str(e.value) and "nginx" in str(e.value)


def test_no_event_loop_and_no_blocked_thread_is_ambiguous():
    data = copy.deepcopy(load("nginx-prefork"))
    for path in list(data["files"]):
        if "/fdinfo/" in path or path.endswith("/syscall"):
            del data["files"][path]
    with pytest.raises(TunerError, match="none watched by one worker alone"):
        run(data)


def test_a_thread_watching_two_sockets_is_refused():
    data = copy.deepcopy(load("haproxy-threads"))
    g = run(data)
    pid = g.sockets[0].worker.pid
    lines = [x for p in epolls(data, pid) for x in data["files"][p].splitlines() if "tfd:" in x]
    for p in epolls(data, pid):  # every epoll instance now watches every socket
        data["files"][p] += "\n".join(lines) + "\n"
    with pytest.raises(TunerError, match="cannot tell which worker serves"):
        run(data)


def test_one_socket_shared_by_every_worker_is_no_group_and_says_how_to_make_one():
    # nginx's plain `listen 8089;` (recorded with `tuner group 8089 --record`, which also
    # records when no map can be made): the master opens one socket, all workers share it
    with pytest.raises(TunerError) as e:
        run(load("nginx-shared-socket"))
    assert re.search(r"has one socket \(\d+\), shared by \d+ \(nginx\), .*: no SO_REUSEPORT "
                     "group", e.value.problem), e.value.problem  # fmt: skip
    assert "listen ... reuseport;" in e.value.fix


def test_nobody_listening_and_several_addresses_are_named():
    data = load("reference-process")
    with pytest.raises(TunerError, match="no process listens on port 1/tcp"):
        run({**data, "port": 1})
    two = copy.deepcopy(data)
    net = next(p for p in two["files"] if p.endswith("/net/tcp"))
    rows = two["files"][net].splitlines()
    port = f":{data['port']:04X}"
    row = next(r for r in rows[1:] if r.split()[1].endswith(port) and r.split()[3] == "0A")
    other = row.replace(row.split()[1].split(":")[0], "0100007F", 1)  # the same port, on lo
    two["files"][net] = "\n".join([*rows, other]) + "\n"
    with pytest.raises(TunerError, match="sockets on 2 addresses"):
        run(two)
