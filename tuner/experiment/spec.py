"""Experiment specs: TOML files under ``experiments/`` (docs/experiments.md has the guide).

Every key has a type, a range and a default; an unknown key or a bad value is refused with
a message that names the key. ``[tuner]`` holds agent settings (the sections of
``tuner.toml``: ``[tuner.model]``, ``[tuner.policy]`` ...) used by the tuner's arms.

>>> s = ExperimentSpec.from_dict({"workload": {"profile": "uniform", "rate": 500}})
>>> s.get("workload.rate"), s.get("server.workers"), s.arms
(500.0, 4, ['kernel', 'kernel-again', 'reactive', 'shadow', 'active'])
>>> ExperimentSpec.from_dict({"workload": {"rates": 500}})
Traceback (most recent call last):
...
tuner.errors.TunerError: unknown key 'workload.rates' in the spec; fix: check the spelling; \
docs/experiments.md lists every key
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.agent.config import AgentConfig
from tuner.cluster.topology import MAX_CLIENT_ADDRESSES
from tuner.errors import TunerError
from tuner.schema import check_value, read_toml
from tuner.workload.profiles import NAMES as PROFILES
from tuner.workload.protocol import ServiceTime

ARMS = ("kernel", "kernel-again", "reactive", "shadow", "active")

# key: (type, default, (lo, hi) or choices or None, meaning with unit)
SCHEMA: dict[str, tuple[type, Any, Any, str]] = {
    "name": (str, "", None, "name shown in reports (default: the file's stem)"),
    "description": (str, "", None, "one line on what the experiment shows"),
    "seed": (int, 1, (0, 2**31), "seed of arrivals, choices and service times"),
    "duration_s": (float, 20.0, (1.0, 3600.0), "measured time per arm, in seconds"),
    "warmup_s": (float, 3.0, (0.0, 600.0), "time per arm before measuring, in seconds"),
    "arms": (list, list(ARMS), ARMS, "arms to run, in order"),
    "repeats": (
        int,
        1,
        (1, 100),
        "rounds of all arms, the order turned each round; figures are medians over rounds",
    ),
    "trace_arms": (
        list,
        ["shadow"],
        ARMS[2:],
        "arms whose agent records a trace into ARM/trace.parquet (for tuner train)",
    ),
    "cluster.clients": (int, 2, (1, 20), "client hosts, one load generator each"),
    "cluster.backends": (
        int,
        0,
        (0, 20),
        "backend hosts serving the service address behind the server host, each running "
        "the server with server.workers workers; the tuner steers XDP on the server host's "
        "eth0 (0: the server host serves, the tuner steers its reuseport group)",
    ),
    "cluster.groups": (
        int,
        1,
        (1, 8),
        "independent server groups (a server host with its own clients each); with more than "
        "one, the arms run at the same time, one per group, their groups turned each round",
    ),
    "cluster.tag": (
        str,
        "",
        None,
        "name of the cluster's namespaces, tnr-<tag>-<host> (groups after the first: "
        "<tag>-g1, ...), for `tuner cluster down <tag>` ('': random; 1 to 12 of a-z, 0-9)",
    ),
    "cluster.server_hosts": (
        list,
        [],
        str,
        "[user@]host[:port] of each server host reached over SSH, one per group; the clients "
        "send to its host part ([]: the test cluster of network namespaces on this machine)",
    ),
    "cluster.client_hosts": (
        list,
        [],
        str,
        "[user@]host[:port] of each client host reached over SSH, split in order among the "
        "server hosts (sets cluster.clients and cluster.groups)",
    ),
    "cluster.ssh_key": (str, "", None, "private key file for SSH ('': the user's own keys)"),
    "cluster.known_hosts": (
        str,
        "~/.ssh/known_hosts",
        None,
        "known-hosts file; an SSH host whose key is not in it is refused",
    ),
    "cluster.python": (
        str,
        "",
        None,
        "Python with tuner installed, on every SSH host ('': the same path as here)",
    ),
    "cluster.workdir": (
        str,
        "/tmp/tuner-experiments",
        None,
        "folder on every SSH host for a run's files while it runs (fetched after each arm)",
    ),
    "server.kind": (
        str,
        "reference",
        ("reference", "nginx", "command"),
        "the server: tuner's reference server, nginx (Debian's), or server.command",
    ),
    "server.command": (
        str,
        "",
        None,
        "kind command: the server's command line, with {port} and {workers} filled in",
    ),
    "server.path": (str, "/", None, "kind command: the path every HTTP request GETs"),
    "server.workers": (int, 4, (1, 64), "worker processes of the server"),
    "server.cpus": (list, [], None, "pin worker i to cpus[i mod n] ([]: no pinning)"),
    "server.work": (str, "cpu", ("cpu", "sleep"), "how service time is spent"),
    "server.protocol": (str, "tcp", ("tcp", "udp"), "protocol (udp: one datagram a request)"),
    "server.port": (int, 8000, (1, 65535), "server port"),
    "workload.profile": (str, "uniform", PROFILES, "skew profile"),
    "workload.rate": (float, 1000.0, (1.0, 100000.0), "requests per second, all clients"),
    "workload.utilization": (
        float,
        0.0,
        (0.0, 1.5),
        "load as this share of what the server sustains, measured at the start of each "
        "round (0: use workload.rate)",
    ),
    "workload.of_limit": (
        float,
        1.0,
        (0.1, 1.0),
        "with workload.utilization: this share of the highest rate the kernel's placement "
        "sustained (0.8: headroom)",
    ),
    "workload.connections": (int, 32, (1, 4096), "logical connections per client"),
    "workload.service": (str, "exp:500", None, "service time KIND:MICROSECONDS"),
    "workload.lifetime_s": (float, 1.0, (0.0, 3600.0), "mean connection lifetime (0: none)"),
    "workload.addresses": (
        str,
        "host",
        ("host", "connection"),
        "where a client's connections come from: the host's address, or each from an address "
        "of its own, kept when it re-opens (client-mix: always)",
    ),
    "workload.zipf_s": (float, 1.0, (0.0, 5.0), "Zipf exponent of heavy hitters"),
    "workload.shift_s": (float, 5.0, (0.1, 3600.0), "shifting-hotspot: seconds per shift"),
    "workload.period_s": (float, 4.0, (0.1, 3600.0), "periodic-bursts: period, seconds"),
    "workload.burst_s": (float, 1.0, (0.01, 3600.0), "periodic-bursts: burst length, seconds"),
    "workload.burst_factor": (float, 2.0, (1.0, 100.0), "periodic-bursts: rate factor"),
    "workload.hog_cpu": (int, 0, (0, 1023), "noisy-neighbour: CPU of the hog (worker 0's)"),
    "workload.heavy_share": (float, 0.125, (0.0, 1.0), "client-mix: share of heavy clients"),
    "workload.heavy_factor": (
        float,
        8.0,
        (1.0, 1000.0),
        "client-mix: a heavy client's request costs this many times a light one's",
    ),
}


@dataclass
class ExperimentSpec:
    """A validated spec; read values with :meth:`get`."""

    values: dict[str, Any]
    tuner: AgentConfig
    source: str = "the spec"
    path: Path | None = None
    arms: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "the spec") -> ExperimentSpec:
        values = {k: (list(v[1]) if isinstance(v[1], list) else v[1]) for k, v in SCHEMA.items()}
        tuner = data.get("tuner", {})
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if key == "tuner":
                continue
            if isinstance(value, dict):
                for sub, v in value.items():
                    flat[f"{key}.{sub}"] = v
            else:
                flat[key] = value
        for key, value in flat.items():
            if key not in SCHEMA:
                raise TunerError(
                    f"unknown key {key!r} in {source}",
                    "check the spelling; docs/experiments.md lists every key",
                )
            values[key] = _check(key, value, source)
        if not isinstance(tuner, dict):
            raise TunerError(f"[tuner] in {source} must be a table of agent settings")
        for sec in ("target",):
            if sec in tuner:
                raise TunerError(f"[tuner.{sec}] in {source} is set by the experiment", "remove it")
        cpus = sorted(os.sched_getaffinity(0))
        absent = [c for c in values["server.cpus"] if c not in cpus]
        if absent:
            raise TunerError(
                f"'server.cpus' in {source} names CPU {absent[0]}, which this machine does not "
                f"have (CPUs {', '.join(map(str, cpus))})",
                "list CPUs this machine has",
            )
        _check_server(values, source)
        _check_clients(values, source)
        _check_of_limit(values, source)
        # the arms may come from --arms yet: counted against the groups when given here
        _check_hosts(values, list(values["arms"]) if "arms" in flat else None, source)
        agent = AgentConfig.from_dict(tuner, source=f"[tuner] of {source}")
        ServiceTime.parse(values["workload.service"])
        return cls(values, agent, source, None, list(values["arms"]))

    @classmethod
    def load(cls, path: str | Path) -> ExperimentSpec:
        p = Path(path)
        data = read_toml(p, "experiment spec", "see `tuner experiment list`")
        spec = cls.from_dict(data, source=str(p))
        spec.path = p
        if not spec.values["name"]:
            spec.values["name"] = p.stem
        return spec

    def get(self, key: str) -> Any:
        return self.values[key]

    def workers(self) -> int:
        """Workers in all: ``server.workers`` on the server host, or on each backend host.

        >>> spec = {"cluster": {"backends": 3}, "server": {"workers": 2}}
        >>> ExperimentSpec.from_dict(spec).workers()
        6
        """
        return self.get("server.workers") * max(1, self.get("cluster.backends"))

    def with_value(self, key: str, value: Any, flag: str) -> ExperimentSpec:
        """The same spec with ``key`` set to ``value`` from a command-line ``flag``, checked
        as the spec's own (``--profile``, ``--of-limit``).

        >>> ExperimentSpec.from_dict({}).with_value("workload.of_limit", 0.8, "--of-limit")
        Traceback (most recent call last):
        ...
        tuner.errors.TunerError: workload.of_limit (--of-limit) needs a calibrated rate; \
fix: set workload.utilization (e.g. 0.7)
        """
        values = dict(self.values)
        values[key] = _check(key, value, flag)
        _check_clients(values, flag)
        _check_of_limit(values, flag)
        return ExperimentSpec(values, self.tuner, self.source, self.path, list(self.arms))

    def with_arms(self, arms: list[str], source: str = "--arms") -> ExperimentSpec:
        """The same spec with other arms (``--arms``), checked as the spec's own.

        >>> ExperimentSpec.from_dict({"cluster": {"groups": 2}, "arms": ["kernel", "active"]}
        ...                          ).with_arms(["kernel"])
        Traceback (most recent call last):
        ...
        tuner.errors.TunerError: 2 groups run 2 arms at the same time, one per group; --arms \
gives 1 arms; fix: list 2 arms (e.g. arms = ['kernel', 'active']), or one group
        """
        values = dict(self.values)
        values["arms"] = _check("arms", list(arms), source)
        _check_hosts(values, values["arms"], source)
        return ExperimentSpec(values, self.tuner, self.source, self.path, list(values["arms"]))

    def to_json(self) -> dict[str, Any]:
        """The spec as run, nested by section, with the agent settings."""
        out: dict[str, Any] = {}
        for key, value in self.values.items():
            sec, _, name = key.rpartition(".")
            (out.setdefault(sec, {}) if sec else out)[name or key] = value
        out["tuner"] = dict(self.tuner.values)
        return out


def _check_server(values: dict[str, Any], source: str) -> None:
    """What the server kinds cannot do, refused with the key named."""
    kind = values["server.kind"]
    if kind == "reference":
        return
    if values["server.protocol"] != "tcp":
        raise TunerError(f"server.kind {kind} in {source} speaks HTTP over TCP", "set protocol tcp")
    if values["cluster.backends"]:
        raise TunerError(
            f"server.kind {kind} in {source} runs on the server host",
            "set cluster.backends = 0, or server.kind reference",
        )
    if kind == "command" and "{port}" not in values["server.command"]:
        raise TunerError(
            f"'server.command' in {source} must be a command line with {{port}} in it",
            'e.g. command = "myserver --listen 0.0.0.0:{port} --threads {workers}"',
        )


def own_addresses(profile: str, addresses: str) -> bool:
    """Whether each connection comes from a client address of its own, with ``profile``
    and ``workload.addresses``: always with client-mix.

    >>> own_addresses("client-mix", "host"), own_addresses("uniform", "connection")
    (True, True)
    """
    return profile == "client-mix" or addresses == "connection"


def _check_clients(values: dict[str, Any], source: str) -> None:
    """Addresses of their own for the connections are added to the hosts the runner creates.

    >>> ExperimentSpec.from_dict({"workload": {"profile": "client-mix", "connections": 300}})
    Traceback (most recent call last):
    ...
    tuner.errors.TunerError: each connection from an address of its own (profile client-mix \
or workload.addresses = "connection") in the spec: at most 250 connections per client; got 300
    """
    if not own_addresses(values["workload.profile"], values["workload.addresses"]):
        return
    what = 'each connection from an address of its own (profile client-mix or ' \
        f'workload.addresses = "connection") in {source}'  # fmt: skip
    if values["workload.connections"] > MAX_CLIENT_ADDRESSES:
        raise TunerError(
            f"{what}: at most {MAX_CLIENT_ADDRESSES} connections per client; "
            f"got {values['workload.connections']}"
        )
    if values["cluster.server_hosts"]:
        raise TunerError(
            f"{what}: the addresses are added to the namespaces the runner creates only",
            "run it without cluster.server_hosts",
        )
    if values["server.protocol"] != "tcp":
        raise TunerError(f"{what}: TCP connections only", 'set server.protocol = "tcp"')


def _check_of_limit(values: dict[str, Any], source: str) -> None:
    if values["workload.of_limit"] < 1.0 and not values["workload.utilization"]:
        what = f"workload.of_limit ({source}) needs a calibrated rate"
        raise TunerError(what, "set workload.utilization (e.g. 0.7)")


def _check_hosts(values: dict[str, Any], arms: list[str] | None, source: str) -> None:
    """Groups and SSH hosts: server hosts with as many client hosts each, no backends (for
    now); with several groups, one arm per group.

    >>> spec = {"cluster": {"server_hosts": ["a", "b"], "client_hosts": ["c", "d", "e", "f"]},
    ...         "arms": ["kernel", "active"]}
    >>> s = ExperimentSpec.from_dict(spec)
    >>> s.get("cluster.groups"), s.get("cluster.clients")
    (2, 2)
    """
    servers, clients = values["cluster.server_hosts"], values["cluster.client_hosts"]
    if values["cluster.tag"] and not re.fullmatch(r"[a-z0-9]{1,12}", values["cluster.tag"]):
        raise TunerError(f"'cluster.tag' in {source} is not 1 to 12 of a-z and 0-9: "
                         f"{values['cluster.tag']!r}", 'e.g. tag = "nightly"')  # fmt: skip
    if servers:
        if not clients or len(clients) % len(servers) or len(clients) // len(servers) > 20:
            raise TunerError(
                f"'cluster.server_hosts' in {source} needs 1 to 20 cluster.client_hosts for "
                f"each of its {len(servers)} server host(s); got {len(clients)}",
                'e.g. client_hosts = ["root@10.0.0.8"] for one server host',
            )
        if len(servers) > 8:
            raise TunerError(f"'cluster.server_hosts' in {source} names more than 8 hosts")
        if values["cluster.backends"]:
            raise TunerError(
                f"SSH hosts in {source} have no backend hosts (not built yet)",
                "set cluster.backends = 0, or use namespaces",
            )
        values["cluster.groups"] = len(servers)
        values["cluster.clients"] = len(clients) // len(servers)
    elif clients:
        raise TunerError(f"'cluster.client_hosts' in {source} needs cluster.server_hosts",
                         "name the server hosts too, or remove client_hosts")  # fmt: skip
    groups = values["cluster.groups"]
    if groups > 1:
        if arms is not None and len(arms) != groups:
            raise TunerError(
                f"{groups} groups run {groups} arms at the same time, one per group; "
                f"{source} gives {len(arms)} arms",
                f"list {groups} arms (e.g. arms = ['kernel', 'active']), or one group",
            )
        if values["cluster.backends"]:
            raise TunerError(f"groups in {source} have no backend hosts (not built yet)",
                             "set cluster.backends = 0")  # fmt: skip


def _check(key: str, value: Any, source: str) -> Any:
    return check_value(SCHEMA, key, value, source)


def list_specs(folder: str | Path) -> list[ExperimentSpec]:
    """The specs in ``folder`` (``*.toml``), sorted by file name; broken ones raise."""
    return [ExperimentSpec.load(p) for p in sorted(Path(folder).glob("*.toml"))]
