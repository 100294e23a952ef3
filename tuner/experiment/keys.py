"""The keys of an experiment spec: each with its type, default, allowed values and meaning.

docs/experiments.md explains them; :class:`tuner.experiment.spec.ExperimentSpec` checks a spec
against them.

>>> SCHEMA["workload.rate"][:3]
(<class 'float'>, 1000.0, (1.0, 100000.0))
"""

from __future__ import annotations

from typing import Any

from tuner.workload.profiles import NAMES as PROFILES

ARMS = ("kernel", "kernel-again", "reactive", "shadow", "active", "variant")
#: the arms a spec runs when it names none: the variant only where it is set
DEFAULT_ARMS = ARMS[:-1]
#: the arms p99 ratios are taken against (``p99_vs_<arm>``): every arm's against the kernel's
#: and the reactive arm's, the variant's against the active arm's
BASES = ("kernel", "reactive", "active")

# key: (type, default, (lo, hi) or choices or None, meaning with unit)
SCHEMA: dict[str, tuple[type, Any, Any, str]] = {
    "name": (str, "", None, "name shown in reports (default: the file's stem)"),
    "description": (str, "", None, "one line on what the experiment shows"),
    "seed": (int, 1, (0, 2**31), "seed of arrivals, choices and service times"),
    "duration_s": (float, 20.0, (1.0, 3600.0), "measured time per arm, in seconds"),
    "warmup_s": (float, 3.0, (0.0, 600.0), "time per arm before measuring, in seconds"),
    "arms": (
        list,
        list(DEFAULT_ARMS),
        ARMS,
        "arms to run, in order (variant: the active arm with [variant]'s agent settings)",
    ),
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
