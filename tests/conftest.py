"""Shared fixtures. Tests marked ``kernel`` load real BPF programs and need root."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tuner.cluster import Cluster

REPO = Path(__file__).resolve().parent.parent
collect_ignore = ["scripts"]  # programs the tests run, not tests


# Kernel tests that may run beside the others: they load XDP and sk_reuseport programs under
# names of their own and run them on crafted packets (BPF_PROG_TEST_RUN). They attach nothing
# to a tracepoint or an interface, make no namespace, and never turn the kernel's run-time
# statistics on, so no other test's check (programs left loaded, namespaces left, events
# counted) can see them.
BESIDE = {"test_steer_xdp.py", "test_xdp_packets.py", "test_conformance.py"}

# Kernel tests that run one after another in a group of their own ("kernel-exp"), beside the
# other kernel tests ("kernel"): the experiments, which make clusters tagged their own
# (``cluster.tag``) and check only those namespaces and their own agents' names (exp-*); and
# the benchmarks and the tests that turn the kernel's run-time statistics on, so that no
# experiment calibrates its load while a benchmark keeps both CPUs busy. The "kernel" tests
# check only the BPF programs no other live process holds (helpers.no_prog_left) and the
# namespaces of their own tags.
EXPERIMENTS = {
    "test_experiment.py",
    "test_ssh_experiment.py",
    "test_fleet_ab.py",
    "test_observe_bench.py",
    "test_bpfsys.py",
}
SERIAL = ("kernel", "kernel-exp")  # scheduled first: the two longest groups


def _group(item) -> str:
    file = item.nodeid.split("::")[0]
    name = Path(file).name
    if "kernel" not in item.keywords or name in BESIDE:
        return file
    return "kernel-exp" if name in EXPERIMENTS else "kernel"


def pytest_itemcollected(item):
    """For ``pytest -n 2 --dist loadgroup`` (``make test``): the kernel tests in two groups
    that each run one after another on one worker (they share the kernel, the bpffs and the
    run-time statistics), beside the tests that touch none of these, kept together by file (a
    module's fixtures are made once). Marked here, as each test is collected: pytest-xdist
    reads the groups when collection ends."""
    item.add_marker(pytest.mark.xdist_group(_group(item)))


def pytest_configure(config):
    version = tuple(int(x) for x in pytest.__version__.split(".")[:2])
    if config.getoption("dist", "no") == "loadgroup" and version >= (9, 2):
        # the kernel tests would run at the same time, and fail in odd ways
        raise pytest.UsageError(
            f"pytest-xdist's --dist loadgroup does not group on pytest {pytest.__version__} "
            "(pytest-dev/pytest-xdist#1386): run `make setup`, which installs pytest<9.2, or "
            "run pytest without -n"
        )


def pytest_collection_modifyitems(config, items):
    # the two serial groups first, so that with --no-loadscope-reorder (make test) each
    # worker starts one, and the short groups of files fill in after
    items.sort(key=lambda item: _group(item) not in SERIAL)
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: loads BPF programs into the kernel")
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(skip)


def run_tuner(
    *args: str, timeout: float = 120, check: bool = False, **kwargs
) -> subprocess.CompletedProcess:
    """Run the ``tuner`` command line in a subprocess, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "tuner", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        **kwargs,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"tuner {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def as_in_a_terminal() -> None:
    """``preexec_fn`` for a command the test stops with SIGINT, as Ctrl-C in a terminal
    would: Ctrl-C's default action restored, since a harness that started the tests in the
    background (``cmd &`` in a script) made every process below it ignore SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def one_line_error(r: subprocess.CompletedProcess, *words: str) -> str:
    """The command failed with one `tuner: error:` line that contains ``words``, and no
    traceback; returns that line."""
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    errors = [x for x in r.stderr.splitlines() if x.startswith("tuner: error:")]
    assert len(errors) == 1 and r.stderr.rstrip().endswith(errors[0]), r.stderr  # progress first
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


@pytest.fixture
def tuner_cli():
    """The :func:`run_tuner` helper."""
    return run_tuner


@pytest.fixture
def served(tmp_path):
    """A cluster with the reference server (4 workers) and a helper to start load."""
    with Cluster(clients=1) as c:
        srv = c.popen(
            "server",
            [sys.executable, "-m", "tuner.workload.server", "--workers", "4", "--cpus", "0,1"],
            stdout=subprocess.PIPE,
            text=True,
        )
        pids = json.loads(srv.stdout.readline())["workers"]

        def load(seconds: float, **kw) -> subprocess.Popen:
            spec = {
                "host": c.host("server").address,
                "rate": 400,
                "seconds": seconds,
                "connections": 16,
                "service": "exp:1000",
                "lifetime_s": 0.3,
                "profile": "heavy-hitters",
                **kw,
            }
            return c.popen(
                "client0",
                [sys.executable, "-m", "tuner.workload.loadgen", "--config", json.dumps(spec)],
                stdout=subprocess.PIPE,
                text=True,
            )

        yield c, pids, load
