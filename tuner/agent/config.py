"""The agent's configuration (``tuner.toml``): every key, its type, range, default and unit.

Keys are validated before anything is loaded into the kernel; an unknown key, a wrong type or
a value out of range is refused with a message that names the key.

>>> cfg = AgentConfig.from_dict({"target": {"port": 8000}, "policy": {"min_share": 0.1}})
>>> cfg.get("policy.min_share"), cfg.get("agent.window_ms")
(0.1, 100)
>>> AgentConfig.from_dict({"policy": {"min_shares": 0.1}})
Traceback (most recent call last):
...
tuner.errors.TunerError: unknown key 'policy.min_shares' in the config; fix: the keys of [policy] \
are: by_cpu, capacity, clients, fill, heavy_client_factor, horizon, hot_flow_hold, hot_flow_share, \
hot_guard, hysteresis, kind, max_step, min_share
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.actuate.pins import NAME_RE, NAME_RULE
from tuner.errors import TunerError
from tuner.probes.config import MAX_SLOTS, ProbeConfig
from tuner.schema import check_value, read_toml

# key: (type, default, allowed: (lo, hi) for numbers or a tuple of choices, help with unit)
SCHEMA: dict[str, tuple[type, Any, Any, str]] = {
    "target.pids": (list, [], None, "workers' PIDs ([]: whoever listens on target.port)"),
    "target.port": (int, 0, (0, 65535), "port of the SO_REUSEPORT group (required)"),
    "target.netns": (str, "", None, "netns where target.port is looked up ('': this one)"),
    "target.protocol": (str, "tcp", ("tcp", "udp"), "protocol of the group"),
    "target.address": (
        str,
        "",
        None,
        "local address of the group, when sockets on target.port are bound to several "
        "('': the one address there is)",
    ),
    "agent.window_ms": (int, 100, (10, 10000), "window length, in milliseconds"),
    "agent.name": (
        str,
        "agent",
        NAME_RE,
        f"steering name: pins under /sys/fs/bpf/tuner/<name>; {NAME_RULE}",
    ),
    "agent.control_socket": (str, "/run/tuner/agent.sock", None, "Unix socket for mode/status"),
    "agent.decision_log": (str, "", None, "JSON lines file of decisions ('' : none)"),
    "agent.record": (
        str,
        "",
        None,
        "trace directory to record into ('': none; tuner run --record)",
    ),
    "agent.record_part_mb": (
        float,
        64.0,
        (0.001, 100000.0),
        "a trace part is closed at this size, MB",
    ),
    "agent.record_part_seconds": (float, 30.0, (0.1, 86400.0), "... or after this many seconds"),
    "agent.lease_ms": (int, 1000, (50, 60000), "lease of a written table, in milliseconds"),
    "agent.lost_server_s": (
        float,
        10.0,
        (0.5, 3600.0),
        "seconds the agent waits, the kernel placing connections, for a server whose workers "
        "are gone to come back before it stops",
    ),
    "agent.sockets": (
        bool,
        False,
        None,
        "follow the workers' TCP connections (network probe): predict each one's load, and "
        "give the learner the load of connections still open (feature live_load)",
    ),
    "agent.max_entities": (
        int,
        ProbeConfig.max_entities,
        (16, MAX_SLOTS),
        "tasks (sched probe) or sockets (network probe) observed at once; more are counted as "
        "refused and not observed (raise it for a server with more threads, or for "
        "agent.sockets under connection churn)",
    ),
    "model.kind": (str, "linear", ("linear", "tree", "last"), "load model"),
    "model.path": (str, "", None, "model saved by `tuner train` ('': none); replaces model.kind"),
    "model.reload_s": (
        float,
        10.0,
        (0.0, 86400.0),
        "with model.path: look for a new version there this often, and try it in shadow "
        "beside the model in use (0: never)",
    ),
    "model.trial_windows": (
        int,
        300,
        (1, 1000000),
        "windows a new model is scored beside the one in use before it replaces it (if it "
        "did no worse)",
    ),
    "model.hot_threshold": (float, 0.8, (0.01, 64.0), "hotspot load, fraction of a CPU"),
    "model.warmup_windows": (int, 20, (0, 100000), "windows before the model may act"),
    "model.horizon_windows": (
        int,
        10,
        (1, 1000),
        "windows the horizon predictions cover (about a connection's life); 1: none",
    ),
    "policy.kind": (
        str,
        "spare",
        ("spare", "pin-first"),
        "spare: by spare capacity; pin-first: everything to target 0 (to test the guard)",
    ),
    "policy.capacity": (float, 1.0, (0.01, 64.0), "load at which a target is full"),
    "policy.horizon": (
        bool,
        False,
        None,
        "decide by each worker's predicted mean load over the horizon (model.horizon_windows) "
        "instead of the next window's; better on nginx's shifting hotspot, where a connection "
        "lives about ten windows (experiments/README.md)",
    ),
    "policy.hot_guard": (
        float,
        0.0,
        (0.0, 64.0),
        "with policy.horizon: a worker whose next window's predicted load is at least this "
        "is decided by that prediction when it is the higher, so a worker hot now gets few "
        "new connections even when its mean over the horizon is low; 0: off",
    ),
    "policy.by_cpu": (
        bool,
        True,
        None,
        "workers pinned to one CPU each: count spare room per CPU, shared by its workers",
    ),
    "policy.min_share": (
        float,
        0.05,
        (0.0, 1.0),
        "smallest share of a live target, in whole table slots (rounded up), at most half "
        "an even share",
    ),
    "policy.max_step": (float, 0.25, (0.001, 1.0), "largest share change per window"),
    "policy.hysteresis": (float, 0.05, (0.0, 1.0), "smallest share change made"),
    "policy.fill": (
        float,
        0.0,
        (0.0, 64.0),
        "load one window's new connections bring, CPUs: water-fill the emptiest targets "
        "first (0: shares in proportion to spare room)",
    ),
    "policy.hot_flow_share": (
        float,
        0.1,
        (0.0, 1.0),
        "UDP: a flow with this share of a window's datagrams is pinned apart (0: off)",
    ),
    "policy.hot_flow_hold": (int, 50, (0, 100000), "windows a pin outlives its flow's heat"),
    "policy.clients": (
        bool,
        False,
        None,
        "learn what each client address's connections cost (needs agent.sockets) and place "
        "new connections of heavy clients apart at their SYN (TCP reuseport groups)",
    ),
    "policy.heavy_client_factor": (
        float,
        3.0,
        (1.1, 100.0),
        "a client is heavy when a connection of it costs this many times the median client's "
        "(its cost per byte times the bytes a connection sends per window)",
    ),
    "guard.enabled": (bool, True, None, "go back to shadow when active makes things worse"),
    "guard.margin": (float, 0.25, (0.0, 10.0), "allowed worsening, fraction of shadow level"),
    "guard.windows": (int, 10, (1, 100000), "consecutive worse windows before tripping"),
    "metrics.port": (int, 0, (0, 65535), "Prometheus metrics on 127.0.0.1:port (0: off)"),
    "xdp.interface": (
        str,
        "",
        None,
        "interface whose new flows XDP spreads over xdp.cpus by predicted spare room ('': off)",
    ),
    "xdp.netns": (str, "", None, "netns of xdp.interface ('': this one)"),
    "xdp.cpus": (list, [], None, "CPUs that process the steered flows ([]: every CPU)"),
    "backends.namespaces": (
        list,
        [],
        str,
        "network namespaces of the backend hosts behind backends.interface, one per backend: "
        "their processes listening on target.port are its workers ([]: steer a reuseport "
        "group instead)",
    ),
    "backends.interface": (str, "eth0", None, "entry interface: XDP spreads its new flows"),
    "backends.netns": (str, "", None, "netns of backends.interface ('': this one)"),
    "backends.devices": (
        list,
        [],
        str,
        "interface toward each backend ([]: backends.interface, one shared segment)",
    ),
    "backends.backend_interface": (
        str,
        "eth0",
        None,
        "each backend's interface in its namespace: frames are addressed to its MAC",
    ),
}


def _sections() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key in SCHEMA:
        sec, name = key.split(".")
        out.setdefault(sec, []).append(name)
    return out


@dataclass(frozen=True)
class AgentConfig:
    """Validated configuration; read values with :meth:`get` (``"section.key"``)."""

    values: dict[str, Any]
    source: str = "the config"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "the config") -> AgentConfig:
        sections = _sections()
        values = {k: v[1] for k, v in SCHEMA.items()}
        for sec, body in data.items():
            if sec not in sections:
                raise TunerError(
                    f"unknown section [{sec}] in {source}",
                    f"the sections are: {', '.join(sorted(sections))}",
                )
            if not isinstance(body, dict):
                raise TunerError(f"[{sec}] in {source} must be a table")
            for name, value in body.items():
                key = f"{sec}.{name}"
                if key not in SCHEMA:
                    raise TunerError(
                        f"unknown key {key!r} in {source}",
                        f"the keys of [{sec}] are: {', '.join(sorted(sections[sec]))}",
                    )
                values[key] = _check(key, value, source)
        if values["policy.clients"] and not values["agent.sockets"]:
            raise TunerError(
                f"policy.clients in {source} learns from the workers' connections",
                "set agent.sockets = true as well",
            )
        if values["policy.hot_guard"] > 0 and not values["policy.horizon"]:
            raise TunerError(
                f"policy.hot_guard in {source} guards the horizon policy, which is off",
                "set policy.horizon = true as well, or remove policy.hot_guard",
            )
        return cls(values, source)

    @classmethod
    def load(cls, path: str | Path) -> AgentConfig:
        """Read and validate a TOML file."""
        p = Path(path)
        data = read_toml(p, "config file", "check the path")
        return cls.from_dict(data, source=str(p))

    def get(self, key: str) -> Any:
        return self.values[key]

    def model_name(self) -> str:
        """What the agent predicts with: the saved model's path, else the model kind.

        >>> AgentConfig.from_dict({"model": {"path": "models/web"}}).model_name()
        'models/web'
        """
        return self.get("model.path") or self.get("model.kind")

    def probe_config(self, pids: Sequence[int]) -> ProbeConfig:
        """What the agent's probes are loaded with: its window, the workers' processes, and
        ``agent.max_entities`` slots.

        >>> AgentConfig.from_dict({"agent": {"max_entities": 320}}).probe_config([7])
        ProbeConfig(window_ms=100, pids=(7,), ..., max_entities=320, ...)
        """
        return ProbeConfig(
            window_ms=self.get("agent.window_ms"),
            pids=tuple(pids),
            max_entities=self.get("agent.max_entities"),
        )

    def with_values(self, **changes: Any) -> AgentConfig:
        """A copy with ``section__key=value`` changes, validated.

        >>> AgentConfig.from_dict({}).with_values(model__kind="tree").get("model.kind")
        'tree'
        """
        values = dict(self.values)
        for k, v in changes.items():
            key = k.replace("__", ".")
            if key not in SCHEMA:
                raise TunerError(f"unknown key {key!r}")
            values[key] = _check(key, v, self.source)
        return AgentConfig(values, self.source)


def model_override(arg: str | None) -> dict[str, Any]:
    """``--model KIND|DIR`` as changes for :meth:`AgentConfig.with_values`: a model kind, or
    the directory of a model saved by ``tuner train``.

    >>> model_override("tree"), model_override("models/web"), model_override(None)
    ({'model__kind': 'tree', 'model__path': ''}, {'model__path': 'models/web'}, {})
    """
    from tuner.learn.models import MODELS

    if not arg:
        return {}
    if arg in MODELS:
        return {"model__kind": arg, "model__path": ""}
    return {"model__path": arg}


#: the longest path a Unix socket can have (``sun_path`` is 108 bytes with its final NUL)
SOCKET_PATH_MAX = 107


def _check(key: str, value: Any, source: str) -> Any:
    """A value of ``key``, checked against the schema (and a control socket's length).

    >>> _check("agent.control_socket", "/x" * 60, "t.toml")
    Traceback (most recent call last):
    tuner.errors.TunerError: 'agent.control_socket' in t.toml is 120 bytes long, longer than \
the 107 a Unix socket path can be; fix: choose a shorter path, e.g. /run/tuner/NAME.sock
    """
    value = check_value(SCHEMA, key, value, source)
    if key == "agent.control_socket" and len(value.encode()) > SOCKET_PATH_MAX:
        raise TunerError(
            f"'agent.control_socket' in {source} is {len(value.encode())} bytes long, longer "
            f"than the {SOCKET_PATH_MAX} a Unix socket path can be",
            "choose a shorter path, e.g. /run/tuner/NAME.sock",
        )
    return value


def reference() -> str:
    """The configuration reference as Markdown rows (used to keep the docs true)."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, (typ, default, allowed, help_) in SCHEMA.items():
        rng = f" ({', '.join(map(str, allowed))})" if isinstance(allowed, tuple) else ""
        rng = " of names" if allowed is str else rng
        rows.append(f"| `{key}` | {typ.__name__}{rng} | `{default!r}` | {help_} |")
    return "\n".join(rows)
