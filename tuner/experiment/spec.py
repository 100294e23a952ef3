"""Experiment specs: TOML files under ``experiments/`` (docs/experiments.md has the guide).

Every key has a type, a range and a default; an unknown key or a bad value is refused with
a message that names the key. ``[tuner]`` holds agent settings (the sections of
``tuner.toml``: ``[tuner.model]``, ``[tuner.policy]`` ...) used by the tuner's arms;
``[variant]``, settings that the ``variant`` arm's agent takes over them (an active arm with
a change, run in the same rounds as the active arm, so the two compare round by round).

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tuner.agent.config import AgentConfig
from tuner.cluster.topology import MAX_CLIENT_ADDRESSES
from tuner.errors import TunerError
from tuner.experiment.keys import SCHEMA
from tuner.schema import check_value, read_toml
from tuner.workload.protocol import ServiceTime


@dataclass
class ExperimentSpec:
    """A validated spec; read values with :meth:`get`."""

    values: dict[str, Any]
    tuner: AgentConfig
    source: str = "the spec"
    path: Path | None = None
    arms: list[str] = field(default_factory=list)
    #: the variant arm's agent settings ([tuner] with [variant] over it); None: no variant
    variant: AgentConfig | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "the spec") -> ExperimentSpec:
        values = {k: (list(v[1]) if isinstance(v[1], list) else v[1]) for k, v in SCHEMA.items()}
        tuner = data.get("tuner", {})
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("tuner", "variant"):
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
        spec = cls(values, agent, source, None, list(values["arms"]))
        if "variant" in data:
            spec = spec.with_variant(data["variant"], f"[variant] of {source}")
        _check_variant(spec, source)
        return spec

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
        return replace(self, values=values, arms=list(self.arms))

    def with_variant(self, changes: dict[str, Any], source: str) -> ExperimentSpec:
        """The same spec with the variant arm's agent settings: ``changes`` (sections of agent
        settings, as in ``[variant]``) over the variant's settings so far (``[variant]`` then
        ``--variant`` add up), or over ``[tuner]``'s, checked as an agent's config.

        >>> s = ExperimentSpec.from_dict({"tuner": {"policy": {"min_share": 0.1}}})
        >>> v = s.with_variant({"policy": {"horizon": True}}, "--variant")
        >>> v.variant_changes(), v.variant.get("policy.min_share")
        ({'policy.horizon': True}, 0.1)
        >>> v.with_variant({"policy": {"hot_guard": 0.8}}, "--variant").variant_changes()
        {'policy.horizon': True, 'policy.hot_guard': 0.8}
        >>> s.with_variant({"horizon": True}, "--variant")
        Traceback (most recent call last):
        ...
        tuner.errors.TunerError: --variant holds sections of agent settings, and 'horizon' is \
not one; fix: e.g. [variant.policy] horizon = true
        """
        merged: dict[str, dict[str, Any]] = {}
        for key, value in (self.variant or self.tuner).values.items():
            sec, _, name = key.partition(".")
            merged.setdefault(sec, {})[name] = value
        for sec, table in changes.items():
            if not isinstance(table, dict):
                raise TunerError(
                    f"{source} holds sections of agent settings, and {sec!r} is not one",
                    "e.g. [variant.policy] horizon = true",
                )
            if sec == "target":
                raise TunerError(f"[variant.target] in {source} is set by the experiment",
                                 "remove it")  # fmt: skip
            merged.setdefault(sec, {}).update(table)
        variant = AgentConfig.from_dict(merged, source=source)
        return replace(self, arms=list(self.arms), variant=variant)

    def variant_changes(self) -> dict[str, Any]:
        """The agent settings in which the variant arm differs from the others ({}: none)."""
        if self.variant is None:
            return {}
        return {k: v for k, v in self.variant.values.items() if self.tuner.values.get(k) != v}

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
        spec = replace(self, values=values, arms=list(values["arms"]))
        _check_variant(spec, source)
        return spec

    def to_json(self) -> dict[str, Any]:
        """The spec as run, nested by section, with the agent settings."""
        out: dict[str, Any] = {}
        for key, value in self.values.items():
            sec, _, name = key.rpartition(".")
            (out.setdefault(sec, {}) if sec else out)[name or key] = value
        out["tuner"] = dict(self.tuner.values)
        if self.variant is not None:
            out["variant"] = self.variant_changes()
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


def _check_variant(spec: ExperimentSpec, source: str) -> None:
    """The variant arm needs settings of its own.

    >>> ExperimentSpec.from_dict({"arms": ["kernel", "variant"]})
    Traceback (most recent call last):
    ...
    tuner.errors.TunerError: the variant arm in the spec runs the agent with [variant]'s \
settings over [tuner]'s, and there are none; fix: add e.g. [variant.policy] horizon = true, \
or --variant policy.horizon=true
    """
    if "variant" in spec.arms and not spec.variant_changes():
        raise TunerError(
            f"the variant arm in {source} runs the agent with [variant]'s settings over "
            "[tuner]'s, and there are none",
            "add e.g. [variant.policy] horizon = true, or --variant policy.horizon=true",
        )


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
