"""A fleet's view of its agents: Prometheus (Debian's) scrapes two running agents with
deploy/prometheus/tuner-rules.yml loaded, and sees each agent, its windows, the recorded
series the dashboard plots, and an agent that dies."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest
from conftest import REPO
from helpers import Agent, wait_for

pytestmark = pytest.mark.kernel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(port: int, expr: str) -> dict[str, float]:
    """Instant query: {instance: value}."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return {x["metric"].get("instance", ""): float(x["value"][1]) for x in body["data"]["result"]}


def answers(port: int, expr: str) -> dict[str, float] | None:
    try:
        return query(port, expr)
    except OSError:  # not listening yet
        return None


def test_prometheus_scrapes_two_agents_records_the_rules_and_sees_one_die(served, tmp_path):
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed (scripts/setup.sh installs it)")
    c, pids, load = served
    second = c.popen(  # a second reference server on the same host, its own reuseport group
        "server",
        [sys.executable, "-m", "tuner.workload.server", "--workers", "2", "--port", "8001"],
        stdout=subprocess.PIPE,
        text=True,
    )
    pids2 = json.loads(second.stdout.readline())["workers"]
    ports = [free_port(), free_port()]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    agents = [
        Agent(tmp_path / "a", pids, "shadow", metrics={"port": ports[0]}),
        Agent(tmp_path / "b", pids2, "shadow", target={"port": 8001}, metrics={"port": ports[1]}),
    ]
    web = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{REPO / 'deploy' / 'prometheus' / 'tuner-rules.yml'}']\n"
        "scrape_configs:\n"
        "  - job_name: tuner\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{ports[0]}', '127.0.0.1:{ports[1]}']}}]\n"
    )
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    gen = load(120)
    a, b = (f"127.0.0.1:{p}" for p in ports)
    try:
        up = wait_for(lambda: (u := answers(web, 'up{job="tuner"}')) and len(u) == 2 and u, 60)
        assert up == {a: 1.0, b: 1.0}
        wait_for(lambda: len(query(web, "increase(tuner_windows_total[10s]) > 0")) == 2, 60)
        # the recorded series the dashboard and the alerts read, per agent
        wait_for(lambda: len(query(web, "tuner:loop_latency_ms:p99_5m")) == 2, 60)
        assert set(query(web, "tuner:fallback_share_5m")) == {a, b}
        assert query(web, "sum(tuner_active)") == {"": 0.0}  # both in shadow
        assert query(web, "sum(tuner_guard_trips_total)") == {"": 0.0}

        done = agents[1].stop()  # one agent dies: the fleet view says which
        assert done.returncode == 0, done.stderr
        wait_for(lambda: query(web, 'up{job="tuner"} == 0') == {b: 0.0}, 60)
        assert query(web, 'up{job="tuner"} == 1') == {a: 1.0}
    finally:
        gen.kill()
        prom.terminate()
        prom.wait(timeout=30)
        for agent in agents:
            if agent.proc.poll() is None:
                agent.stop()
