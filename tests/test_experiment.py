"""`tuner experiment`: specs refused with the key named, and a short run through all arms."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import REPO

from tuner.agent.control import request
from tuner.cluster import leftovers
from tuner.cluster.netutil import remove_namespaces
from tuner.errors import TunerError
from tuner.experiment.spec import ExperimentSpec, list_specs

SHORT = """\
description = "a short run for the tests"
seed = 3
warmup_s = 1
duration_s = 3

[cluster]
clients = 2

[server]
workers = 4

[workload]
profile = "heavy-hitters"
rate = 300
connections = 8
service = "exp:500"
lifetime_s = 0.5

[tuner.model]
warmup_windows = 5
"""


def test_every_shipped_spec_is_valid():
    specs = list_specs(REPO / "experiments")
    names = {s.path.name for s in specs}
    assert "default.toml" in names
    default = ExperimentSpec.load(REPO / "experiments/default.toml")
    assert default.get("workload.profile") == "heavy-hitters"
    per_arm = default.get("warmup_s") + default.get("duration_s") + 8  # start-up and drain
    assert per_arm * len(default.arms) <= 180  # the 3-minute budget


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[workload]\nrates = 5\n", "unknown key 'workload.rates'"),
        ("[workload]\nrate = -5\n", "'workload.rate'"),
        ('[workload]\nprofile = "zipf"\n', "'workload.profile' in"),
        ('[workload]\nservice = "gauss:5"\n', "service time 'gauss:5'"),
        ('arms = ["kernel", "magic"]\n', "'arms'"),
        ('[server]\nworkers = "four"\n', "'server.workers'"),
        ("[tuner.policy]\nmax_steps = 1\n", "unknown key 'policy.max_steps'"),
        ("[workload\n", "is not valid TOML"),
        ('[cluster]\ntag = "a-b"\n', "'cluster.tag' in"),
        ('arms = ["kernel", "variant"]\n', "the variant arm in"),
        ("[variant]\nhorizon = true\n", "'horizon' is not one"),
        ("[variant.policy]\nhorizons = true\n", "unknown key 'policy.horizons'"),
    ],
)
def test_broken_specs_are_refused_naming_the_key(tmp_path, tuner_cli, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TunerError, match=None) as e:
        ExperimentSpec.load(path)
    assert needle in str(e.value)
    r = tuner_cli("experiment", "run", str(path), "--out", str(tmp_path / "out"))
    assert r.returncode == 1 and needle in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_missing_spec_file_is_a_clear_error(tuner_cli, tmp_path):
    r = tuner_cli("experiment", "run", str(tmp_path / "nope.toml"))
    assert r.returncode == 1 and "nope.toml does not exist" in r.stderr


def test_experiment_list_shows_the_specs(tuner_cli):
    r = tuner_cli("experiment", "list", check=True)
    assert "experiments/default.toml" in r.stdout and "heavy-hitters" in r.stdout


@pytest.fixture
def cluster_tag():
    """A cluster tag of the test's own (``cluster.tag``, see :func:`short`); removes that
    cluster if the run was killed (a timeout kills `tuner experiment` with SIGKILL, before it
    can take its namespaces down). Only the test's own: other kernel tests run beside."""
    tag = uuid.uuid4().hex[:8]
    try:
        yield tag
    finally:
        remove_namespaces(leftovers(tags=[tag]))


def short(tag: str) -> str:
    """The :data:`SHORT` spec, its cluster tagged ``tag``."""
    return textwrap.dedent(SHORT).replace("[cluster]\n", f'[cluster]\ntag = "{tag}"\n', 1)


@pytest.mark.kernel
def test_short_experiment_runs_all_arms_and_writes_every_output(tmp_path, tuner_cli, cluster_tag):
    spec = tmp_path / "short.toml"
    spec.write_text(short(cluster_tag))
    out = tmp_path / "out"
    r = tuner_cli("experiment", "run", str(spec), "--out", str(out), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "| active |" in r.stdout and "| kernel |" in r.stdout
    for name in (
        "summary.json",
        "samples.parquet",
        "latency_cdf.png",
        "worker_load.png",
        "report.md",
    ):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["spec"]["workload"]["profile"] == "heavy-hitters"
    assert list(summary["arms"]) == ["kernel", "kernel-again", "reactive", "shadow", "active"]
    for arm, m in summary["arms"].items():
        for key in (
            "requests",
            "errors",
            "throughput_rps",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "p99_9_ms",
            "imbalance",
            "decisions_per_s",
            "tuner_cpu_s",
        ):
            assert m[key] is not None, (arm, key)
        assert m["errors"] == 0 and m["requests"] > 500, (arm, m)
    assert summary["arms"]["kernel"]["tuner_cpu_s"] == 0
    assert summary["arms"]["active"]["tuner_cpu_s"] > 0
    for arm in ("reactive", "shadow", "active"):  # the agents' probes' counters, read
        assert summary["arms"][arm]["refused"] == 0  # 4 workers: slots for all
        assert summary["arms"][arm]["records_lost"] >= 0
    assert summary["arms"]["shadow"]["placed_share"] == 0  # the kernel placed every one
    assert summary["arms"]["active"]["placed_share"] > 0.5  # the table, once warmed up
    table = pq.read_table(out / "samples.parquet")
    arms = {"kernel", "kernel-again", "reactive", "shadow", "active"}
    assert set(table.column("arm").to_pylist()) == arms
    assert summary["arms"]["kernel-again"]["tuner_cpu_s"] == 0  # the A/A arm runs no agent
    assert summary["arms"]["active"]["p99_vs_reactive"] > 0
    shadow_log = [
        json.loads(x) for x in (out / "shadow" / "decisions.jsonl").read_text().splitlines()
    ]
    assert shadow_log and all(not x["workers"].get("written") for x in shadow_log if "workers" in x)
    report = (out / "report.md").read_text()
    assert "| reactive |" in report and "latency_cdf.png" in report
    assert not leftovers(tags=[cluster_tag])  # the cluster is gone


@pytest.mark.kernel
def test_profile_override_and_arm_subset(tmp_path, tuner_cli, cluster_tag):
    spec = tmp_path / "short.toml"
    spec.write_text(short(cluster_tag).replace("duration_s = 3", "duration_s = 2"))
    out = tmp_path / "out"
    r = tuner_cli(
        "experiment",
        "run",
        str(spec),
        "--out",
        str(out),
        "--profile",
        "uniform",
        "--arms",
        "kernel",
        "--json",
        "--no-plots",
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["spec"]["workload"]["profile"] == "uniform"
    assert list(summary["arms"]) == ["kernel"]
    assert not list(out.glob("*.png")) and ".png" not in (out / "report.md").read_text()


@pytest.mark.kernel
def test_a_variant_arm_runs_the_agent_with_its_settings_beside_the_active_arm(
    tmp_path, tuner_cli, cluster_tag
):
    """--variant adds the variant arm: the active arm's agent with a setting changed, run in
    the same rounds, its p99 compared with the active arm's round by round."""
    spec = tmp_path / "short.toml"
    spec.write_text(short(cluster_tag).replace("duration_s = 3", "duration_s = 2"))
    out = tmp_path / "out"
    r = tuner_cli("experiment", "run", str(spec), "--out", str(out), "--arms", "kernel,active",
                  "--variant", "policy.min_share=0.2", "--repeats", "2", "--json", "--no-plots",
                  timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert list(summary["arms"]) == ["kernel", "active", "variant"]
    assert summary["spec"]["variant"] == {"policy.min_share": 0.2}
    variant, active = summary["arms"]["variant"], summary["arms"]["active"]
    assert not variant.get("failed") and not active.get("failed")
    assert len(variant["p99_vs_active_rounds"]) == 2 and len(variant["p99_vs_active_ci"]) == 2
    assert "p99_vs_active" not in active and "p99_vs_active" not in summary["arms"]["kernel"]
    for i in (1, 2):  # each agent ran with its own settings
        arm = out / f"round-{i}"
        assert "min_share = 0.2" in (arm / "variant" / "agent.toml").read_text()
        assert "min_share = 0.2" not in (arm / "active" / "agent.toml").read_text()
    report = (out / "report.md").read_text()
    assert "`variant` is the active arm with `policy.min_share = 0.2`" in report
    assert "p99/active per round" in report and "| p99/active |" in report


def _kernel_and_active(tmp_path, tuner_cli, text: str) -> tuple[dict, list[dict]]:
    """Run spec ``text`` (2 s measured) through the kernel and active arms into tmp_path/out;
    the summary and the active arm's decisions."""
    spec = tmp_path / "spec.toml"
    spec.write_text(text.replace("duration_s = 3", "duration_s = 2"))
    out = tmp_path / "out"
    r = tuner_cli(
        "experiment", "run", str(spec), "--out", str(out), "--arms", "kernel,active", "--json",
        "--no-plots", timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    decisions = (out / "active" / "decisions.jsonl").read_text().splitlines()
    return json.loads(r.stdout), [json.loads(x) for x in decisions]


@pytest.mark.kernel
def test_active_arm_with_xdp_steers_the_server_interface(tmp_path, tuner_cli, cluster_tag):
    # [tuner.xdp] interface = "eth0": the runner points the agent at the server host's eth0
    # (its namespace is the experiment's own), and the active arm writes XDP tables too
    text = short(cluster_tag) + '\n[tuner.xdp]\ninterface = "eth0"\n'
    summary, rows = _kernel_and_active(tmp_path, tuner_cli, text)
    assert summary["arms"]["active"]["errors"] == 0
    out = tmp_path / "out"
    xdp = [row["xdp"] for row in rows if "xdp" in row]
    assert xdp and any(x["written"] for x in xdp), rows[-1]
    assert all(x["entities"] == [f"cpu:{i}" for i in range(len(x["loads"]))] for x in xdp)
    cfg = (out / "active" / "agent.toml").read_text()
    assert 'interface = "eth0"' in cfg and "netns = " in cfg


@pytest.mark.kernel
def test_backends_behind_an_xdp_entry_are_steered_by_the_active_arm(
    tmp_path, tuner_cli, cluster_tag
):
    # cluster.backends = 2: each backend host serves the service address with its own server;
    # the kernel arm spreads flows by ECMP, the active arm's XDP on the entry picks backends
    text = short(cluster_tag).replace("clients = 2", "clients = 1\nbackends = 2")
    summary, rows = _kernel_and_active(
        tmp_path, tuner_cli, text.replace("workers = 4", "workers = 2")
    )
    out = tmp_path / "out"
    for arm in ("kernel", "active"):
        assert summary["arms"][arm]["errors"] == 0, summary["arms"][arm]
        assert summary["arms"][arm]["requests"] > 0
    workers = pq.read_table(out / "samples.parquet").column("worker").to_pylist()
    assert set(workers) == {0, 1, 2, 3}  # numbered on across the two backends
    assert rows[-1]["workers"]["entities"] == ["backend:0", "backend:1"]
    assert any(r["workers"].get("written") and r["workers"].get("table") for r in rows
               if "workers" in r), rows[-1]  # fmt: skip
    cfg = (out / "active" / "agent.toml").read_text()
    assert "[backends]" in cfg and "namespaces = [" in cfg


@pytest.mark.kernel
def test_client_mix_gives_clients_addresses_and_the_active_arm_places_heavy_ones(
    tmp_path, tuner_cli, cluster_tag
):
    # every connection from an address of its own; the agent learns each client's cost from
    # the bytes it sends and the workers' CPU time, and writes heavy clients' places
    text = (
        short(cluster_tag)
        .replace('profile = "heavy-hitters"', 'profile = "client-mix"\nheavy_factor = 20.0')
        .replace("duration_s = 3", "duration_s = 5")
        .replace("[tuner.model]", "[tuner.agent]\nsockets = true\n\n[tuner.policy]\n"
                 "clients = true\n\n[tuner.model]")
    )  # fmt: skip
    summary, rows = _kernel_and_active(tmp_path, tuner_cli, text)
    for arm in ("kernel", "active"):
        assert summary["arms"][arm]["errors"] == 0, summary["arms"][arm]
    active = summary["arms"]["active"]
    assert active["client_mae"] is not None and active["heavy_clients"] >= 1, active
    sockets = [r["sockets"] for r in rows if "sockets" in r]
    assert max(s["clients"]["followed"] for s in sockets) == 16  # 8 addresses on each host
    placed = [r["workers"]["clients"] for r in rows if "clients" in r.get("workers", {})]
    written = [p for p in placed if p["written"] and p["placed"]]
    assert written, placed[-1]
    assert all(a.startswith(("198.18.32.", "198.18.33.")) for p in written for a in p["placed"])


# -- arms that are not results (issue 18, items 2, 3 and 15) ----------------------------------
def test_a_cpu_the_machine_lacks_is_named(tmp_path, tuner_cli):
    path = tmp_path / "cpus.toml"
    path.write_text("[server]\ncpus = [0, 99]\n")
    r = tuner_cli("experiment", "run", str(path), "--out", str(tmp_path / "out"))
    assert r.returncode == 1 and "names CPU 99" in r.stderr and "Traceback" not in r.stderr


def _exp_traces(runner_pid: int | None = None) -> list[str]:
    """What the agents of an experiment (all, or the one run by ``runner_pid``) left in bpffs
    and /run/tuner."""
    from tuner.actuate.pins import PIN_ROOT, STATE_ROOT

    name = f"exp-{runner_pid}*" if runner_pid else "exp-*"
    pins = [p.name for p in Path(PIN_ROOT).glob(name)] if Path(PIN_ROOT).is_dir() else []
    return pins + [p.name for p in Path(STATE_ROOT).glob(name)]


@pytest.mark.kernel
def test_six_workers_at_five_percent_run_and_an_arm_in_fallback_fails(
    tmp_path, tuner_cli, cluster_tag
):
    """Six workers with min_share 0.05 once ended every agent arm at its first decision; and
    an arm whose agent spends the run in fall-back (here: warming up for ever) must be marked
    failed, with no figure, and the run must exit non-zero."""
    text = short(cluster_tag).replace("duration_s = 3", "duration_s = 2")
    text = text.replace("workers = 4", "workers = 6\ncpus = [0, 1]")
    text += "\n[tuner.policy]\nmin_share = 0.05\n"
    six = tmp_path / "six.toml"
    six.write_text(text)
    r = tuner_cli("experiment", "run", str(six), "--no-plots", "--out", str(tmp_path / "six"),
                  "--arms", "kernel,active", "--json", timeout=240)  # fmt: skip
    assert r.returncode == 0, r.stderr
    active = json.loads(r.stdout)["arms"]["active"]
    assert "failed" not in active and active["fallback_share"] <= 0.1
    assert active["p99_vs_kernel"] > 0

    stuck = tmp_path / "stuck.toml"
    stuck.write_text(short(cluster_tag).replace("warmup_windows = 5", "warmup_windows = 99999")
                     .replace("duration_s = 3", "duration_s = 2"))  # fmt: skip
    out = tmp_path / "stuck"
    r = tuner_cli("experiment", "run", str(stuck), "--out", str(out), "--arms", "kernel,active",
                  "--no-plots", timeout=240)  # fmt: skip
    assert r.returncode == 1 and "arm active failed" in r.stderr and "Traceback" not in r.stderr
    assert "| active FAILED |" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    active = summary["arms"]["active"]
    assert "fall-back for 100%" in active["failed"] and "model warming up" in active["failed"]
    assert "p99_vs_kernel" not in active and active["fallback_share"] == 1.0
    assert "**active FAILED**" in (out / "report.md").read_text()
    assert not list(out.glob("*/agent.sock"))


@pytest.mark.kernel
def test_an_agent_killed_mid_arm_fails_the_arm_and_leaves_nothing(tmp_path, cluster_tag):
    """The agent SIGKILLed during an active arm: the kernel's placement takes over (the
    lease), the arm is failed with the agent's exit named, and its pins are removed."""
    spec = tmp_path / "spec.toml"
    spec.write_text(short(cluster_tag).replace("duration_s = 3", "duration_s = 4"))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner", "experiment", "run", str(spec), "--out", str(out),
         "--arms", "active", "--json", "--no-plots"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        sock = out / "active" / "agent.sock"
        log = out / "active" / "decisions.jsonl"
        deadline = time.monotonic() + 120
        while not _loaded(log):  # the agent decides, and the load has started
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        agent_pid = _agent_pid(out / "active" / "agent.toml")
        assert request(str(sock), {"cmd": "status"})["ok"] and agent_pid
        os.kill(agent_pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1 and "arm active failed" in stderr, stderr
    active = json.loads(stdout)["arms"]["active"]
    assert active["failed"].startswith("the agent exited (status -9)"), active
    assert active["errors"] == 0  # the lease lapsed: the kernel placed new connections
    assert _exp_traces(proc.pid) == [] and not sock.exists()


def _loaded(log: Path) -> bool:
    """The decision log shows a window with load on some worker."""
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return False
    return any(max(json.loads(x).get("workers", {}).get("loads", [0.0])) > 0.05 for x in lines[:-1])


def _agent_pid(config: Path) -> int | None:
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                cmd = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(config).encode() in cmd and b"run" in cmd:
                return int(p)
    return None


# -- real servers (issue 17) -------------------------------------------------------------------
@pytest.mark.kernel
@pytest.mark.parametrize("kind", ["nginx", "command"])
def test_an_experiment_runs_against_a_real_server(tmp_path, tuner_cli, cluster_tag, kind):
    """nginx from Debian, or a server the user brings (`server.command`): the load generator
    speaks HTTP/1.1 keep-alive, the agent finds the workers itself, answers name the worker."""
    server = {
        "nginx": 'kind = "nginx"',
        "command": f'kind = "command"\ncommand = "{sys.executable} '
        f'{REPO}/tests/scripts/http_workers.py {{port}} {{workers}}"',
    }[kind]
    text = short(cluster_tag).replace("workers = 4", f"workers = 4\n{server}")
    spec = tmp_path / "spec.toml"
    spec.write_text(text.replace("duration_s = 3", "duration_s = 2"))
    out = tmp_path / "out"
    r = tuner_cli("experiment", "run", str(spec), "--out", str(out), "--arms", "kernel,active",
                  "--json", "--no-plots", timeout=240)  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    for arm in ("kernel", "active"):
        assert summary["arms"][arm]["errors"] == 0 and summary["arms"][arm]["requests"] > 300
    workers = pq.read_table(out / "samples.parquet").column("worker").to_pylist()
    assert set(workers) == {0, 1, 2, 3}  # every answer named its worker, in target order
    cfg = (out / "active" / "agent.toml").read_text()
    assert "netns = " in cfg and "pids" not in cfg  # the agent found the workers itself
    assert not _running(str(out)) and not _running("http_workers.py")  # the servers stopped


def _running(text: str) -> list[int]:
    """Processes whose command line mentions ``text``."""
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != os.getpid():
            try:
                if text.encode() in Path(f"/proc/{p}/cmdline").read_bytes():
                    found.append(int(p))
            except OSError:
                continue
    return found


@pytest.mark.kernel
def test_load_given_as_utilization_is_calibrated_each_round(tmp_path, tuner_cli, cluster_tag):
    """workload.utilization: a calibration run measures what the server sustains, and the
    round runs at that share of it, checked under the spec's (skewed) profile and lowered
    until the kernel's placement keeps up, then refined between the rates kept and not;
    --of-limit runs it below that limit; the rate used and the calibration are reported."""
    text = short(cluster_tag).replace("rate = 300", "utilization = 0.4")
    spec = tmp_path / "spec.toml"
    spec.write_text(text.replace("duration_s = 3", "duration_s = 2"))
    out = tmp_path / "out"
    r = tuner_cli("experiment", "run", str(spec), "--out", str(out), "--arms", "kernel",
                  "--of-limit", "0.8", "--json", "--no-plots", timeout=240)  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    cal = summary["calibration"]
    assert cal["saturated"] and cal["capacity"] > 100 and cal["offered"] > cal["capacity"]
    assert cal["checked"][0] == pytest.approx(0.4 * cal["capacity"], rel=0.01)
    checks = cal["checks"]
    assert [c["rate"] for c in checks] == cal["checked"]
    first = next(i for i, c in enumerate(checks) if c["kept_up"])
    for a, b in itertools.pairwise(cal["checked"][: first + 1]):  # down by 0.8 until one keeps up
        assert b == pytest.approx(0.8 * a, rel=0.01)
    kept = max((c for c in checks if c["kept_up"]), key=lambda c: c["rate"])
    for c in checks[first + 1 :]:  # then halfway between a rate kept and one not, above it
        assert checks[first]["rate"] < c["rate"] < cal["checked"][first - 1]
    assert len(checks) <= first + 3
    # the limit is the highest rate kept (a median of at most ten service times), and the
    # round runs at 0.8 of it
    assert cal["sustained"] and cal["limit"] == pytest.approx(kept["rate"], rel=0.01)
    assert summary["rate"] == pytest.approx(0.8 * kept["rate"], rel=0.01)
    assert kept["answered"] >= 0.95 and kept["p50_ms"] <= 5.0  # exp:500: the floor
    kernel = summary["arms"]["kernel"]
    assert kernel["overloaded"] is False and kernel["errors"] == 0
    assert kernel["throughput_rps"] == pytest.approx(summary["rate"], rel=0.15)
    report = (out / "report.md").read_text()
    assert "req/s measured" in report and "run at 80% of the" in report
