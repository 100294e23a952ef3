"""The agent (`tuner run`) against the reference server in a test cluster, on the real kernel."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import REPO, run_tuner
from helpers import Agent, no_prog_left, tuner_prog_ids, wait_for

from tuner.actuate.pins import PIN_ROOT, read_pins
from tuner.agent.decisions import by_entity
from tuner.schema import to_toml

pytestmark = pytest.mark.kernel
PORT = 8000


def test_shadow_decides_and_scores_but_writes_nothing_then_mode_switches(served, tmp_path):
    c, pids, load = served
    # XDP on the server host's interface spreads new flows over both CPUs, by their predicted
    # spare room: a second steering under the same modes
    xdp = {"interface": "eth0", "netns": c.host("server").netns, "cpus": [0, 1]}
    agent = Agent(tmp_path, pids, "shadow", xdp=xdp)
    gen = load(120)  # once the agent is up; killed when the test is done with it
    try:
        wait_for(lambda: agent.busy_windows() >= 10 and agent.status()["shadow"]["decisions"] >= 10)
        for name in (agent.name, agent.name + "-xdp"):
            pins = read_pins(name)
            assert pins["generation"] == 0 and pins["lease_left_ms"] < 0  # untouched
        steered = [e["xdp"] for e in agent.entries() if "xdp" in e]
        cpus = {"cpu:0", "cpu:1"}
        assert steered and all(set(x["entities"]) == cpus and not x["written"] for x in steered)
        assert all(set(by_entity(x, "predictions")) == cpus for x in steered)
        st = agent.status()
        assert st["mode"] == "shadow" and st["shadow"]["mean_gap_to_balanced"] >= 0
        decided = [e for e in agent.entries() if e.get("workers", {}).get("changed")]
        assert decided and all(not e["workers"]["written"] for e in decided)
        assert all(len(e["workers"]["table"]) == 256 for e in decided)
        # the served workers are pinned to CPUs 0 and 1: those CPUs are entities too, loaded
        # by the workers (and the load generator), and the shares count room per CPU
        busy = [by_entity(e["cpus"], "loads") for e in agent.entries() if "cpus" in e]
        assert busy and set(busy[-1]) == {"cpu:0", "cpu:1"}
        assert max(max(b.values()) for b in busy) > 0.1
        assert all(set(by_entity(e["cpus"], "predictions")) == {"cpu:0", "cpu:1"} for e in decided)

        r = run_tuner("mode", "active", "--socket", agent.sock)
        assert r.returncode == 0 and "active" in r.stdout
        live = wait_for(lambda: (p := read_pins(agent.name))["generation"] > 0 and p)
        assert live["lease_left_ms"] > 0 and set(live["table"]) <= set(range(4))
        live = wait_for(lambda: (p := read_pins(agent.name + "-xdp"))["generation"] > 0 and p)
        assert live["lease_left_ms"] > 0 and set(live["table"]) <= {0, 1}

        run_tuner("mode", "shadow", "--socket", agent.sock, check=True)
        gens = {n: read_pins(n)["generation"] for n in (agent.name, agent.name + "-xdp")}
        for name in gens:  # the 300 ms leases lapse
            wait_for(lambda name=name: read_pins(name)["lease_left_ms"] < 0)
        for name, gen_at_switch in gens.items():
            pins = read_pins(name)
            assert pins["generation"] == gen_at_switch  # no write after the switch
            assert pins["lease_left_ms"] < 0  # lapsed: the kernel's own placement again
        text = run_tuner("status", "--socket", agent.sock, check=True).stdout
        assert "mode        shadow" in text and "loop" in text
        assert "hotspots    next window: precision" in text and "; horizon: " in text
    finally:
        done = agent.stop()
        gen.kill()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["mode"] == "shadow"
    assert not Path(PIN_ROOT, agent.name).exists()
    assert not Path(PIN_ROOT, agent.name + "-xdp").exists()


def test_forced_regression_trips_the_guard_back_to_shadow(served, tmp_path):
    c, pids, load = served
    agent = Agent(
        tmp_path, pids, "shadow", policy={"kind": "pin-first"}, guard={"margin": 0.1, "windows": 5}
    )
    gen = load(120, rate=700, profile="uniform")
    try:
        wait_for(lambda: agent.busy_windows() >= 20)  # shadow: the guard learns the normal level
        run_tuner("mode", "active", "--socket", agent.sock, check=True)
        wait_for(lambda: agent.status()["mode"] == "shadow")
        why = [e for e in agent.entries() if e.get("event") == "mode"]
        assert why[-1]["mode"] == "shadow" and why[-1]["why"].startswith("regression guard")
    finally:
        agent.stop()
        gen.kill()


def test_sigkill_in_active_mode_loses_no_connection(served, tmp_path):
    c, pids, load = served
    agent = Agent(tmp_path, pids, "active", model={"kind": "last", "warmup_windows": 0})
    gen = load(120, lifetime_s=0.05)  # ~20 new connections per second per logical connection
    started = time.monotonic()
    try:
        wait_for(lambda: read_pins(agent.name)["generation"] > 0)
        wait_for(lambda: agent.busy_windows(mode="active", written=True) >= 10)  # steering
        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait()
        killed_at = time.monotonic() - started  # on the generator's clock, roughly
        for line in gen.stdout:  # three more seconds of load after the kill
            if json.loads(line).get("t", 0) >= killed_at + 3:
                break
        gen.send_signal(signal.SIGTERM)  # stops sending, waits for the answers, reports
        final = json.loads(gen.communicate(timeout=60)[0].splitlines()[-1])
    finally:
        gen.kill()
        run_tuner("cleanup", check=True)
    assert final["errors"] == 0 and final["connect_errors"] == 0, final
    assert final["answered"] > 1000


def test_bad_config_and_missing_target_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[policy]\nmin_shares = 0.1\n")
    r = run_tuner("run", "--config", str(bad))
    assert r.returncode == 1 and "unknown key 'policy.min_shares'" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1

    bad.write_text("[agent]\nwindow_ms = 0\n")
    r = run_tuner("run", "--config", str(bad))
    assert r.returncode == 1 and "'agent.window_ms'" in r.stderr and "[10, 10000]" in r.stderr

    gone = tmp_path / "gone.toml"
    gone.write_text(f"[target]\npids = [4194300]\nport = {PORT}\n")
    r = run_tuner("run", "--config", str(gone))
    assert r.returncode == 1 and "target process 4194300 does not exist" in r.stderr

    r = run_tuner("run", "--config", str(tmp_path / "none.toml"))
    assert r.returncode == 1 and "does not exist" in r.stderr

    r = run_tuner("status", "--socket", str(tmp_path / "no.sock"))
    assert r.returncode == 1 and "no agent is listening" in r.stderr

    backends = tmp_path / "backends.toml"
    backends.write_text(f'[target]\nport = {PORT}\n[backends]\nnamespaces = ["tnr-no-such"]\n')
    r = run_tuner("run", "--config", str(backends))
    assert r.returncode == 1 and "network namespace 'tnr-no-such' does not exist" in r.stderr
    backends.write_text(f"[target]\nport = {PORT}\n[backends]\nnamespaces = [1]\n")
    r = run_tuner("run", "--config", str(backends))
    assert r.returncode == 1 and "'backends.namespaces'" in r.stderr and "list of names" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "unmount,message",
    [
        (["/sys/fs/bpf"], "the BPF file system is not mounted at /sys/fs/bpf"),
        (["/sys/kernel/tracing", "/sys/kernel/debug"], "tracefs is not mounted"),
    ],
    ids=["no-bpffs", "no-tracefs"],
)
def test_a_missing_kernel_feature_is_a_one_line_error_and_leaves_nothing(
    served, tmp_path, unmount, message
):
    """`tuner run` in a private mount namespace where a file system it needs is unmounted:
    the machine's own mounts stay as they are."""
    c, pids, _ = served
    name = f"t-miss-{uuid.uuid4().hex[:6]}"
    cfg = tmp_path / "tuner.toml"
    cfg.write_text(
        to_toml(
            {
                "target": {"pids": pids, "port": PORT},
                "agent": {"name": name, "control_socket": str(tmp_path / "a.sock")},
            }
        )
    )
    before = tuner_prog_ids()
    umounts = "; ".join(f"umount -l {m}" for m in unmount)
    script = f"{umounts}; exec {sys.executable} -m tuner run --config {cfg} --seconds 2"
    r = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and message in r.stderr and "fix: mount -t" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    no_prog_left(before)  # the steering program was detached again
    assert not Path(PIN_ROOT, name).exists() and not (tmp_path / "a.sock").exists()


def test_agent_exits_cleanly_when_the_server_goes_away(served, tmp_path):
    """The server's workers die and do not come back: the agent leaves the kernel's
    placement in force (the group is gone anyway), waits agent.lost_server_s, and stops."""
    c, pids, load = served
    agent = Agent(tmp_path, pids, "active", agent={"lost_server_s": 2.0})
    for p in pids:
        subprocess.run(["kill", "-9", str(p)], check=False)
    agent.proc.wait(timeout=60)
    err = agent.proc.stderr.read()
    assert agent.proc.returncode == 1 and "Traceback" not in err
    assert "worker map uncertain" in err and "no usable reuseport group" in err, err
    assert not Path(PIN_ROOT, agent.name).exists()  # detached on the way out
    uncertain = [e for e in agent.entries() if "uncertain" in e.get("fallback", "")]
    assert uncertain  # logged as a fall-back while it waited


def test_bench_loop_reports_latency_and_the_model_beats_last_value(tuner_cli):
    r = tuner_cli("bench", "loop", "--windows", "60", "--json", check=True)
    out = json.loads(r.stdout)
    for n in (8, 64, 512):
        assert out[f"p99_ms_{n}"] >= out[f"p50_ms_{n}"] > 0
    # the synthetic pattern is periodic: the learned model must beat the last value
    assert out["model_mae_64"] < out["baseline_mae_64"]
    assert not list(Path(PIN_ROOT).glob("bench-loop-*"))


def test_metrics_endpoint_serves_predictions_errors_and_loop_latency(served, tmp_path):
    import socket
    import urllib.request

    c, pids, load = served
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    agent = Agent(tmp_path, pids, "shadow", metrics={"port": port})
    gen = load(120)
    try:
        wait_for(lambda: agent.status()["windows"] >= 10)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        assert values["tuner_windows_total"] >= 10 and values["tuner_active"] == 0
        assert values["tuner_records_lost_total"] == 0
        # shadow: the table placed nothing, the kernel every new connection (no lease)
        assert sum(values[f'tuner_placed_total{{channel="workers",target="{i}"}}']
                   for i in range(4)) == 0  # fmt: skip
        assert values['tuner_left_to_kernel_total{channel="workers",why="no_lease"}'] > 0
        assert values["tuner_guard_trips_total"] == 0 and values["tuner_fallback"] in (0, 1)
        assert values['tuner_loop_latency_ms_bucket{le="+Inf"}'] >= 10
        for i in range(4):
            label = f'{{channel="workers",entity="worker:{i}"}}'
            assert values[f"tuner_predicted_load{label}"] >= 0
            assert 0 <= values[f"tuner_hotspot_probability{label}"] <= 1
        assert 'tuner_model_mae{model="baseline"}' in values
        for model in ("model", "baseline"):  # the learner's record, next window and horizon
            for horizon in ("1", "10"):
                assert values[f'tuner_prequential_mae{{model="{model}",horizon="{horizon}"}}'] >= 0
    finally:
        gen.kill()
        assert agent.stop().returncode == 0


def test_socket_entities_follow_connections_and_give_live_load(served, tmp_path):
    from tuner.trace.reader import read_trace

    c, pids, load = served
    trace = tmp_path / "trace"
    before = tuner_prog_ids()
    agent = Agent(tmp_path, pids, "shadow", agent={"sockets": True, "record": str(trace)})
    gen = load(120)  # 16 connections, each re-opened after ~0.3 s: about 5 close per window
    try:
        wait_for(lambda: agent.busy_windows() >= 30, seconds=60)
        assert agent.status()["sockets"] >= 1
        text = run_tuner("status", "--socket", agent.sock, check=True).stdout
        assert "connections followed" in text
    finally:
        done = agent.stop()
        gen.kill()
    assert done.returncode == 0, done.stderr
    no_prog_left(before)  # the network probe is detached with the rest
    busy = [e for e in agent.entries()
            if "sockets" in e and max(e["workers"]["loads"]) > 0.05]  # fmt: skip
    assert len(busy) >= 10
    # the connections are followed: open ones across windows, closes seen as they happen
    assert max(e["sockets"]["followed"] for e in busy) >= 8
    assert sum(e["sockets"]["closed"] for e in busy) >= 10
    for e in busy:
        loads = by_entity(e["workers"], "loads")
        for w, x in by_entity(e["workers"], "features").items():
            assert 0 <= x["live_load"] <= loads[w] + 1e-9
        for sk, p in e["sockets"]["hottest"].items():
            assert int(sk.split(":")[1]) in pids
            assert p["load"] >= 0 and 0 <= p["p_hot"] <= 1
    # some window lost load to closed connections: live_load below load
    assert any(x["live_load"] < by_entity(e["workers"], "loads")[w] - 0.01 for e in busy
               for w, x in by_entity(e["workers"], "features").items())  # fmt: skip
    t = read_trace(str(trace))
    live = t.matrix("live_load")
    assert (live >= 0).sum() >= t.windows * 4 * 0.9  # recorded for (almost) every window, worker


def test_sockets_refused_for_want_of_slots_are_said_counted_and_logged(served, tmp_path):
    # 32 connections re-opened every ~0.1 s against 16 slots: the network probe cannot
    # observe them all; the agent must say so (stderr, decision log) and count them
    c, pids, load = served
    agent = Agent(tmp_path, pids, "shadow", agent={"sockets": True, "max_entities": 16})
    gen = load(120, connections=32, lifetime_s=0.1)
    try:
        wait_for(lambda: agent.status()["refused"].get("net", 0) > 0, seconds=60)
        text = run_tuner("status", "--socket", agent.sock, check=True).stdout
        assert "refused" in text and "net " in text
        wait_for(lambda: any("changes" in e for e in agent.entries()))  # flushed at once
    finally:
        done = agent.stop()
        gen.kill()
    assert done.returncode == 0, done.stderr
    said = "sockets not observed, all 16 slots taken; fix: raise agent.max_entities"
    assert said in done.stderr
    logged = [ch for e in agent.entries() for ch in e.get("changes", [])]
    assert any(said in ch for ch in logged), logged
