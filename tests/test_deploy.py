"""The deployment files in deploy/ against the tools that read them and against the code.

A unit file systemd rejects, rules Prometheus rejects, a dashboard that plots a metric the agent
does not export, or a DaemonSet whose config the agent refuses would each fail on the first
real host: these tests catch that here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from tuner.agent.config import AgentConfig
from tuner.agent.loop import Snapshot
from tuner.agent.metrics import render
from tuner.cli import build_parser
from tuner.learn.scores import Skill, SkillSummary

DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "systemd" / "tuner-agent.service"
RULES = DEPLOY / "prometheus" / "tuner-rules.yml"
DAEMONSET = DEPLOY / "kubernetes" / "daemonset.yaml"
DASHBOARD = DEPLOY / "grafana" / "tuner-fleet.json"
PROMQL_WORDS = {
    "sum", "avg", "by", "rate", "increase", "histogram_quantile", "avg_over_time", "ignoring",
    "and", "or", "unless", "on", "le", "model", "horizon", "channel", "instance", "job", "up",
}  # fmt: skip


def unit_values(key: str) -> list[str]:
    return [
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith(key + "=")
    ]


def exported_metrics() -> set[str]:
    """Metric names the agent's /metrics serves (from a rendered snapshot)."""
    skill = SkillSummary(3, 1, Skill(0.1, 0.9, 0.8), Skill(0.2, 0.5, 0.5))
    text = render(Snapshot(3, 1, 0, "shadow", 0.1, 0.2, (0.5, 2.0), None, skill))
    names = {m.group(1) for m in re.finditer(r"^# TYPE (\w+) (\w+)$", text, re.M)}
    names |= {n + s for n in names for s in ("_bucket", "_sum", "_count")}
    return names


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (label values and functions left out)."""
    expr = re.sub(r'"[^"]*"', "", expr)  # label values
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)  # grouping labels
    return {w for w in re.findall(r"[a-zA-Z_:][\w:]*", expr) if w not in PROMQL_WORDS}


def recorded() -> set[str]:
    rules = yaml.safe_load(RULES.read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def test_systemd_unit_verifies_and_its_commands_parse():
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (Debian: systemd)")
    # the unit names /opt/tuner; point it at this checkout's tuner to verify the commands
    tuner = Path(sys.executable).with_name("tuner")
    text = UNIT.read_text().replace("/opt/tuner/.venv/bin/tuner", str(tuner))
    text = text.replace("file:/opt/tuner/docs", f"file:{REPO}/docs")
    with_path = Path("/run/systemd/test-tuner-agent.service")  # verify wants a unit's name
    with_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with_path.write_text(text)
        r = subprocess.run(
            ["systemd-analyze", "verify", str(with_path)], capture_output=True, text=True
        )
    finally:
        with_path.unlink(missing_ok=True)
    own = [x for x in r.stderr.splitlines() if "test-tuner-agent" in x]
    assert r.returncode == 0 and not own, r.stderr
    parser = build_parser()
    for line in unit_values("ExecStart") + unit_values("ExecStopPost"):
        args = line.split()[1:]
        parser.parse_args(args)  # exits (SystemExit) on an option the CLI does not have


def test_prometheus_rules_check_and_read_only_exported_metrics():
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (scripts/setup.sh installs prometheus)")
    r = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    known = exported_metrics() | recorded()
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert metric_names(rule["expr"]) <= known, rule


def test_dashboard_plots_only_exported_or_recorded_series():
    dash = json.loads(DASHBOARD.read_text())
    known = exported_metrics() | recorded()
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs
    for expr in exprs:
        assert metric_names(expr) <= known, expr


def test_daemonset_matches_the_unit_and_its_config_loads():
    docs = list(yaml.safe_load_all(DAEMONSET.read_text()))
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    cfg = AgentConfig.from_dict(tomllib.loads(config["data"]["agent.toml"]), "the ConfigMap")
    assert cfg.get("target.port") == 443 and cfg.get("metrics.port") == 9464
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] and pod["hostNetwork"]  # the server's processes and sockets
    (agent,) = pod["containers"]
    caps = agent["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    unit_caps = unit_values("CapabilityBoundingSet")[0].split()
    assert {"CAP_" + c for c in caps["add"]} == set(unit_caps)  # one set of privileges
    build_parser().parse_args(agent["args"])
    mounts = {m["mountPath"] for m in agent["volumeMounts"]}
    assert {"/sys/fs/bpf", "/sys/kernel/tracing", "/lib/modules", "/etc/tuner"} <= mounts
    assert config["data"]["agent.toml"].count("/run/tuner/agent.sock") == 1
    probe = agent["livenessProbe"]["exec"]["command"]
    assert probe[probe.index("--socket") + 1] == "/run/tuner/agent.sock"
