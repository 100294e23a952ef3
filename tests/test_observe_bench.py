"""`tuner observe` and `tuner bench overhead` as a user runs them (short versions)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO
from helpers import Gated, netns_pair, no_prog_left, progs_of, tuner_prog_ids

pytestmark = pytest.mark.kernel


def test_observe_json_reports_the_watched_process(tuner_cli):
    # The child runs until killed: on a slow CI machine compiling the three probes took longer than
    # a fixed 2 s, and the child had stopped making syscalls before the syscall probe attached.
    child = Gated("import os\nwhile True: os.getppid()\n")
    try:
        child.go()
        proc = tuner_cli(
            "observe", "--pid", str(child.pid), "--json", "--seconds", "1.2", "--window-ms", "50"
        )
    finally:
        child.kill()
    assert proc.returncode == 0, proc.stderr
    frames = [json.loads(line) for line in proc.stdout.splitlines()]
    entities = {f["entity"] for f in frames}
    assert f"proc:{child.pid}" in entities and f"task:{child.pid}" in entities
    assert {f["probe"] for f in frames} >= {"sched", "syscalls"}
    assert "detached" in proc.stderr


def test_observe_table_fits_80_columns(tuner_cli):
    proc = tuner_cli("observe", "--seconds", "1.5", "--interval", "0.5", "--probes", "sched")
    assert proc.returncode == 0, proc.stderr
    assert "entity" in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80


def test_observe_says_what_it_refused_for_want_of_slots(tuner_cli):
    children = [Gated("import os\nwhile True: os.getppid()\n") for _ in range(3)]
    try:
        for child in children:
            child.go()
        pids = [a for c in children for a in ("--pid", str(c.pid))]
        proc = tuner_cli("observe", *pids, "--max-entities", "2", "--probes", "sched",
                         "--seconds", "1.5", "--interval", "0.5")  # fmt: skip
    finally:
        for child in children:
            child.kill()
    assert proc.returncode == 0, proc.stderr
    assert "refused (no slot; --max-entities): sched " in proc.stdout
    refused = int(proc.stderr.split(" refused")[0].rsplit(" ", 1)[1])
    assert refused >= 1, proc.stderr  # the third child: counted, not observed


@pytest.mark.parametrize(
    "args,message",
    [
        (["--pid", "999999999"], "process 999999999 does not exist"),
        (["--port", "1"], "no process listens on port 1"),
        (["--port", "1", "--netns", "no-such-ns"], "network namespace 'no-such-ns' does not exist"),
        (["--window-ms", "0"], "'window_ms' parameter"),
        (
            ["--max-entities", "1000"],
            "'max_entities' parameter of ProbeConfig must be an int in the range [1, 384]",
        ),
        (["--probes", "nope"], "unknown probe 'nope'"),
        (["--cgroup", "/no/such/cgroup"], "cgroup '/no/such/cgroup' not found"),
    ],
)
def test_observe_bad_input_is_one_line(tuner_cli, args, message):
    before = tuner_prog_ids()
    proc = tuner_cli("observe", "--seconds", "0.5", *args)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2  # the "tracing ..." line and the error
    no_prog_left(before)


def test_observe_ebpf_prints_the_programs(tuner_cli):
    out = tuner_cli("observe", "--ebpf", "--probes", "sched", check=True).stdout
    assert "RAW_TRACEPOINT_PROBE(sched_switch)" in out and "tuner_window_closed" in out
    assert "-DTASK_PID_OFF=" in out  # the offset the running kernel's BTF gives


def test_bench_overhead_json(tuner_cli):
    proc = tuner_cli(
        "bench", "overhead", "--seconds", "0.3", "--rounds", "1", "--json", timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    for key in ("syscall_throughput_ratio", "ctxswitch_throughput_ratio", "records_lost"):
        assert key in r
    # ratios measured beside other tests (tests/conftest.py): that they were measured, not
    # their size, which `tuner bench overhead` on a quiet machine is for
    assert r["syscall_throughput_ratio"] > 0
    assert r["syscall_sysfloor_ratio"] > 0 and r["ctxswitch_sysfloor_ratio"] > 0
    assert r["syscall_events_per_s"] > 100_000  # the kernel side saw the loop
    assert r["syscall_records"] > 0
    # nanoseconds added per operation beside the ratios; the interest set and duty arms ran
    assert r["syscall_sysfloor_ns"] > 0
    # the probes' time over the empty programs' is reported when the floor rose above the
    # noise; its sign is a size (one 0.3-s round beside other tests measured -0.078 in CI)
    if r["syscall_floor_ns"] > 0:
        assert isinstance(r["syscall_probe_over_floor"], float)
    assert r["syscall_interest_ratio"] > 0 and r["syscall_duty_ratio"] > 0
    # a new connection a 64-byte exchange: its rate, and the sockets the probes refused
    assert r["churn_bare_ops_per_s"] > 100 and r["churn_throughput_ratio"] > 0
    assert r["churn_refused_per_s"] >= 0 and r["churn_events_per_s"] > 0
    # nginx from Debian, started by the bench: bare, the agent's probes, all probes, and the
    # empty programs on all their attach points
    assert r["nginx_bare_rps"] > 100 and r["nginx_agent_ratio"] > 0
    assert len(r["nginx_all_round_ratios"]) == 1 and r["nginx_floor_ratio"] > 0
    assert "nginx_all_us" in r and "nginx_floor_us" in r
    # ns per event by attach point, from the kernel's run-time statistics: a ping-pong
    # round trip is two context switches, a getppid loop one sys_enter per call; the
    # programs run for every task, so the kernel tests running beside (tests/conftest.py)
    # add some runs, never fewer
    ctx, sys_ = r["per_event"]["ctxswitch"], r["per_event"]["syscall"]
    assert 1.8 <= ctx["sched_switch"]["per_op"] < 5
    assert 0.9 <= sys_["sys_enter"]["per_op"] < 3
    assert ctx["sched_switch"]["probe_ns"] > 0 and ctx["sched_switch"]["empty_ns"] > 0


def test_observe_ctrl_c_detaches_everything():
    import signal
    import subprocess
    import sys

    from conftest import REPO, as_in_a_terminal

    before = tuner_prog_ids()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner", "observe", "--probes", "sched,net", "--interval", "0.3"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_in_a_terminal,
    )
    try:
        assert proc.stdout.readline(), "observe printed no table"  # running, all attached
        assert progs_of(proc.pid)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "detached" in err
    no_prog_left(before)


def test_bench_steer_json(tuner_cli):
    proc = tuner_cli("bench", "steer", "--repeat", "10000", "--rounds", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["xdp_ns"] > 0 and r["xdp_noop_ns"] > 0 and r["xdp_ratio"] > 0


def test_bench_agent_json(tuner_cli):
    """The agent's own costs: CPU over steady state at 4 and 64 workers, start-up twice;
    nothing of the agents or their servers is left behind."""
    before = tuner_prog_ids()
    proc = tuner_cli("bench", "agent", "--seconds", "1", "--json", timeout=400)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert 0 < r["cpu_frac_4"] < 1 and 0 < r["cpu_frac_64"] < 1
    assert 0 < r["startup_s"] < 60 and r["first_table_s"] >= r["startup_s"]
    assert [len(r["runs"][n]) for n in ("4", "64")] == [2, 1]
    assert all(run["windows"] >= 1 for run in r["runs"]["64"])
    no_prog_left(before)


def test_under_ip_netns_exec_the_error_names_the_namespace_to_give_instead():
    # `ip netns exec` mounts a /sys of its own, without tracefs: the error must say so and
    # name the namespace to set instead, not tell the user to mount tracefs
    with netns_pair() as (ns_a, *_):
        proc = subprocess.run(
            ["ip", "netns", "exec", ns_a, sys.executable, "-m", "tuner", "observe",
             "--seconds", "0.2"],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert f"`ip netns exec {ns_a}` mounted a /sys of its own" in error, error
    assert f"--netns {ns_a}" in error
