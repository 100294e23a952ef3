"""The hosts an experiment runs on, and the load it puts on them.

:func:`hosts` gives one set of hosts per group (``cluster.groups``): a network-namespace
cluster on this machine each, or each server host of ``cluster.server_hosts`` with its share
of ``cluster.client_hosts``, reached over SSH. :func:`run_load` runs a load generator on every
client host of one or more groups at once (arms of several groups run side by side, with the
same seeds: the same arrivals), and :func:`fetch` and :func:`collect` bring their samples
back.

>>> spec = ExperimentSpec.from_dict({"cluster": {"server_hosts": ["a", "b"],
...     "client_hosts": ["c", "d"]}, "arms": ["kernel", "active"]})
>>> [(g.server, g.clients) for g in hosts(spec)]
[('a', ['c']), ('b', ['d'])]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuner.cluster import Cluster, Hosts, SshHosts
from tuner.cluster.remote import HostLost
from tuner.cluster.topology import VIP
from tuner.experiment.spec import ExperimentSpec, own_addresses
from tuner.workload.loadgen import SAMPLE

ARM_SAMPLE = np.dtype(SAMPLE.descr + [("client", "u1")])  # SAMPLE plus the client host
Progress = Callable[[str, float, str], None]


def hosts(spec: ExperimentSpec) -> list[Hosts]:
    """The groups ``spec`` runs on, not yet up (each is a context manager)."""
    servers = spec.get("cluster.server_hosts")
    if not servers:
        own = own_addresses(spec.get("workload.profile"), spec.get("workload.addresses"))
        per_host = spec.get("workload.connections") if own else 0
        tag = spec.get("cluster.tag")
        return [
            Cluster(
                clients=spec.get("cluster.clients"),
                backends=spec.get("cluster.backends"),
                client_addresses=per_host,
                tag=f"{tag}-g{g}" if tag and g else tag,
            )  # fmt: skip
            for g in range(spec.get("cluster.groups"))
        ]
    clients, per = list(spec.get("cluster.client_hosts")), spec.get("cluster.clients")
    return [
        SshHosts(
            server=server,
            clients=clients[g * per : (g + 1) * per],
            key=spec.get("cluster.ssh_key"),
            known_hosts=spec.get("cluster.known_hosts"),
            python=spec.get("cluster.python") or sys.executable,
            workdir=spec.get("cluster.workdir"),
        )
        for g, server in enumerate(servers)
    ]


@dataclass
class Load:
    """One group's part of a load run: its hosts, the folder of each host for its files, and
    how to talk to its server (a :class:`~tuner.workload.wire.HttpWire`'s arguments)."""

    cluster: Hosts
    dirs: dict[str, str]
    http: dict[str, Any] | None
    gens: list[Any] | None = None  # the load generators, once started


def run_load(
    spec: ExperimentSpec,
    loads: list[Load],
    seconds: float,
    rate: float,
    progress: Progress,
    label: str,
    profile: str | None = None,
) -> bool:
    """Run a load generator on every client host of every group in ``loads`` for
    ``seconds``, ``rate`` requests/s per group (samples into each host's folder); returns
    whether Ctrl-C cut it short. Each load's ``gens`` holds its generators after."""
    everyone = []
    for load in loads:
        c = load.cluster
        service = VIP if c.by_role("backend") else c.host("server").address
        load.gens = []
        for i, host in enumerate(c.by_role("client")):
            cfg = load_spec(spec, i, seconds, service, load.http, rate, profile, host.aliases)
            argv = [c.python, "-m", "tuner.workload.loadgen", "--config", json.dumps(cfg),
                    "--out", f"{load.dirs[host.name]}/samples-{i}.npy"]  # fmt: skip
            load.gens.append(c.start(host, argv, lines=True))
        everyone += load.gens
    try:
        for line in everyone[0].stdout:
            msg = json.loads(line)
            if "t" in msg:
                progress(label, min(msg["t"] / seconds, 1.0), f"{msg['sent']} requests")
        for g in everyone:
            g.wait()
    except KeyboardInterrupt:
        for g in everyone:
            g.terminate()
        for g in everyone:
            g.wait()
        return True
    return False


def load_spec(
    spec: ExperimentSpec,
    i: int,
    seconds: float,
    host: str,
    http: dict[str, Any] | None,
    rate: float,
    profile: str | None = None,
    sources: Sequence[str] = (),
) -> dict[str, Any]:
    """The load generator's config for client ``i`` (:mod:`tuner.workload.loadgen`); its
    connections come from ``sources`` (the host's addresses) when each has an address of its
    own (:func:`~tuner.experiment.spec.own_addresses`).

    >>> cfg = load_spec(ExperimentSpec.from_dict({}), 1, 5.0, "198.18.0.1", None, 500.0)
    >>> cfg["rate"], cfg["seed"], cfg["profile"]
    (250.0, 1001, 'uniform')
    """
    w = {k.split(".", 1)[1]: v for k, v in spec.values.items() if k.startswith("workload.")}
    return {
        "host": host,
        "port": spec.get("server.port"),
        "rate": rate / spec.get("cluster.clients"),
        "seconds": seconds,
        "connections": w["connections"],
        "profile": profile or w["profile"],
        "service": w["service"],
        "lifetime_s": w["lifetime_s"],
        "seed": spec.get("seed") * 1000 + i,
        "udp": spec.get("server.protocol") == "udp",
        "http": http,
        "profile_args": {
            k: w[k]
            for k in (
                "zipf_s",
                "shift_s",
                "period_s",
                "burst_s",
                "burst_factor",
                "heavy_share",
                "heavy_factor",
            )
        },  # fmt: skip
        "sources": list(sources) if own_addresses(profile or w["profile"], w["addresses"]) else [],
    }


def fetch(cluster: Hosts, dirs: dict[str, str], arm_dir: Path) -> str:
    """Fetch every host's files of an arm into ``arm_dir``, from each host still reachable;
    returns what was lost ("" when nothing)."""
    lost = []
    for name, remote in dirs.items():
        try:
            cluster.collect(cluster.host(name), remote, arm_dir)
        except HostLost as e:
            lost.append(e.problem)
    gone = [n for n in cluster.lost() if not any(n in x for x in lost)]
    lost += [f"host {n} was lost during the arm" for n in gone]
    return "; ".join(lost)


def collect(arm_dir: Path, clients: int) -> np.ndarray:
    """The samples the load generators left in ``arm_dir``, in one array (removed after).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); np.save(d / "samples-1.npy", np.zeros(3, dtype=SAMPLE))
    >>> x = collect(d, 2); x.size, x["client"].tolist()
    (3, [1, 1, 1])
    """
    parts = []
    for i in range(clients):
        path = arm_dir / f"samples-{i}.npy"
        if path.exists():
            x = np.load(path)
            y = np.zeros(x.size, dtype=ARM_SAMPLE)
            for k in SAMPLE.names:
                y[k] = x[k]
            y["client"] = i
            parts.append(y)
            path.unlink()
    if not parts:
        return np.zeros(0, dtype=ARM_SAMPLE)
    return np.concatenate(parts)
