"""The server an experiment's arms run against (``[server] kind``), started afresh for each
arm on the server host (or each backend host) and stopped after it.

- ``reference``: tuner's reference server (:mod:`tuner.workload.server`), its own protocol;
  it reports its workers' pids, and each answer names its worker.
- ``nginx``: nginx from Debian's package (:mod:`tuner.workload.nginx`), ``server.workers``
  workers with ``reuseport`` sockets pinned as ``server.cpus`` says; requests are HTTP/1.1
  GETs of files gzipped at level 9, the file chosen so that its cost (measured here) is the
  service time the workload drew.
- ``command``: any server the user brings, ``server.command`` with ``{port}`` and
  ``{workers}`` filled in; requests are HTTP/1.1 GETs of ``server.path``. Its cost is its own
  (the service time is not sent), so the imbalance column counts requests.

For nginx and command servers the workers are found as the agent finds them
(:func:`tuner.group.discover` on the server host: in its namespace, or ``tuner group --json``
run there over SSH), so worker ``i`` of the samples is target ``i`` of the steering. nginx is
started as ``python -m tuner.workload.nginx`` on that host, its files in a folder there that
is fetched into the arm's ``nginx/`` when it stops.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.cluster import Hosts
from tuner.cluster.netutil import stop_processes
from tuner.cluster.remote import HostLost
from tuner.cluster.topology import Host
from tuner.errors import TunerError
from tuner.experiment.spec import ExperimentSpec
from tuner.group import Group
from tuner.workload import nginx

START_S = 30.0  # a server must listen with all its workers within this


@dataclass
class Server:
    """A started server: its processes, its workers' pids in target order, how to talk to it,
    and the netns the agent finds it in (None: the agent is given the pids)."""

    procs: list[Any]  # subprocess.Popen, or RemoteProcess on an SSH host
    pids: list[int]
    http: dict[str, Any] | None  # a tuner.workload.wire.HttpWire's arguments, or None
    netns: str | None
    files: ServerFiles | None = None  # nginx's own folder, fetched when it stops

    def stop(self) -> None:
        stop_processes(self.procs)
        if self.files is not None:
            with contextlib.suppress(TunerError):  # a lost host: its arm fails, named, anyway
                self.files.fetch()


@dataclass(frozen=True)
class ServerFiles:
    """A server's own folder ``root`` on ``host``, and the arm's folder ``local`` it comes
    back into (on a namespace host it is that folder already)."""

    cluster: Hosts
    host: Host
    root: str
    local: Path

    def fetch(self) -> None:
        """Bring the folder back, without nginx's document root and temporary files."""
        self.cluster.collect(self.host, self.root, self.local)
        for bulky in ("www", "tmp"):
            shutil.rmtree(self.local / bulky, ignore_errors=True)


def start(spec: ExperimentSpec, cluster: Hosts, arm_dir: Path, costs_us: Sequence[float]) -> Server:
    """Start the spec's server for an arm kept in ``arm_dir``; ``costs_us``: for nginx, its
    :func:`nginx_costs_us`, measured once for the run."""
    kind = spec.get("server.kind")
    if kind == "reference":
        return _reference(spec, cluster)
    host = cluster.host("server")
    port, workers = spec.get("server.port"), spec.get("server.workers")
    files = None
    if kind == "nginx":
        logs = arm_dir / "nginx"
        logs.mkdir(exist_ok=True)
        root = cluster.arm_dir(host, logs)
        cpus = ",".join(map(str, spec.get("server.cpus")))
        argv = [cluster.python, "-m", "tuner.workload.nginx", "--root", root, "--port",
                str(port), "--workers", str(workers), "--cpus", cpus]  # fmt: skip
        procs = [cluster.start(host, argv, log=f"{root}/start.log")]
        paths = [f"/cost/{k}.txt" for k in nginx.FILES]
        costs = list(costs_us)
        files = ServerFiles(cluster, host, root, logs)
    else:
        argv = shlex.split(spec.get("server.command").format(port=port, workers=workers))
        procs = [cluster.start(host, argv)]
        paths, costs = [spec.get("server.path")], [1.0]
    server = Server(procs, [], None, host.netns, files)
    try:
        group = _wait_for_group(spec, server, cluster, host)
    except BaseException:
        server.stop()
        raise
    server.pids = [w.pid for w in group.workers]
    keys = [str(w.pid if w.tid is None else w.tid) for w in group.workers]
    server.http = {"paths": paths, "costs_us": costs, "workers": {k: i for i, k in enumerate(keys)}}
    return server


def _start_error(server: Server) -> str:
    """What the server said when it exited at start: nginx's own log lines."""
    if server.files is None:
        return ""
    server.files.fetch()
    text = ""
    for name in ("start.log", "error.log"):
        with contextlib.suppress(OSError):
            text += (server.files.local / name).read_text()
    return " ".join(text.split())[-500:]


def _wait_for_group(spec: ExperimentSpec, server: Server, cluster: Hosts, host: Host) -> Group:
    """The server's group once all its workers listen (event-based, bounded by START_S)."""
    deadline = time.monotonic() + START_S
    want, why = spec.get("server.workers"), "nothing yet"
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in server.procs):
            raise TunerError(
                f"the {spec.get('server.kind')} server exited at start: {_start_error(server)}"
                .strip(), "see its error above")  # fmt: skip
        try:
            g = cluster.group(host, spec.get("server.port"), spec.get("server.protocol"))
            if len(g.sockets) >= want:
                return g
            why = f"{len(g.sockets)} of {want} sockets"
        except HostLost:
            raise
        except TunerError as e:
            why = e.problem
        time.sleep(0.1)
    raise TunerError(
        f"the {spec.get('server.kind')} server did not listen with {want} workers in "
        f"{START_S:g} s ({why})",
        "check server.command / server.workers",
    )


def nginx_costs_us() -> list[float]:
    """What gzip level 9 costs for each of nginx's files, measured here with zlib (the same
    library nginx uses): microseconds, the fastest of three runs."""
    out = []
    for text in nginx.file_texts():
        data = text.encode()
        best = float("inf")
        for _ in range(3):
            t0 = time.thread_time_ns()
            zlib.compress(data, 9)
            best = min(best, (time.thread_time_ns() - t0) / 1e3)
        out.append(best)
    return out


def _reference(spec: ExperimentSpec, cluster: Hosts) -> Server:
    """The reference server on the server host, or one on each backend host (worker indices
    and CPUs numbered on across them)."""
    hosts = cluster.by_role("backend") or [cluster.host("server")]
    workers, cpus = spec.get("server.workers"), spec.get("server.cpus")
    procs: list[Any] = []
    pids: list[int] = []
    for i, host in enumerate(hosts):
        first = i * workers
        argv = [cluster.python, "-m", "tuner.workload.server", "--workers", str(workers),
                "--port", str(spec.get("server.port")), "--work", spec.get("server.work"),
                "--first-index", str(first)]  # fmt: skip
        if cpus:
            mine = [cpus[(first + w) % len(cpus)] for w in range(workers)]
            argv += ["--cpus", ",".join(map(str, mine))]
        if spec.get("server.protocol") == "udp":
            argv.append("--udp")
        proc = cluster.start(host, argv, lines=True)
        procs.append(proc)
        try:
            pids += json.loads(proc.stdout.readline())["workers"]
        except (ValueError, KeyError):
            stop_processes(procs)
            raise TunerError(
                f"the reference server on {host.name} did not start", "see its error above"
            ) from None
    return Server(procs, pids, None, None)
