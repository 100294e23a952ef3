"""Experiments across hosts reached over SSH (issue 22): OpenSSH's server from Debian runs in
test namespaces that stand for real hosts, with keys the test makes; the runner reaches them
only through SSH, from a namespace of its own, as it would reach machines on a network."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import REPO, as_in_a_terminal
from test_experiment import SHORT, _loaded, _running

from tuner.cluster import Cluster
from tuner.cluster.netutil import NETNS_DIR, namespace_pids, stop_processes
from tuner.experiment.spec import ExperimentSpec
from tuner.trace.reader import read_trace

SSHD = "/usr/sbin/sshd"
pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not os.path.exists(SSHD), reason="openssh-server missing: make setup"),
]

CLUSTER = """\
[cluster]
server_hosts = ["root@{server}"]
client_hosts = {clients}
ssh_key = "{key}"
known_hosts = "{known}"
workdir = "{workdir}"
"""


@dataclass
class SshLab:
    """Namespace hosts with sshd, and a controller namespace to run the experiment from."""

    cluster: Cluster
    sshd: dict[str, subprocess.Popen]
    key: Path
    known: Path
    workdir: Path

    def spec(self, path: Path, arms: list[str], duration: float, server: str = "") -> Path:
        clients = [f"root@{h.address}" for h in self.cluster.by_role("client")[:2]]
        cluster = CLUSTER.format(clients=json.dumps(clients), key=self.key, known=self.known,
                                 server=self.cluster.host("server").address,
                                 workdir=self.workdir)  # fmt: skip
        text = textwrap.dedent(SHORT).replace("[cluster]\nclients = 2\n", cluster)
        text = text.replace("duration_s = 3", f"duration_s = {duration:g}")
        text = text.replace("workers = 4\n", f"workers = 4\n{server}\n")  # [server]
        path.write_text(f"arms = {json.dumps(arms)}\n" + text)  # the experiment test's spec
        ExperimentSpec.load(path)  # valid
        return path

    def experiment(self, spec: Path, out: Path) -> subprocess.Popen:
        """`tuner experiment run` in the controller namespace (network only: the files are
        this machine's)."""
        ns = f"{NETNS_DIR}/{self.cluster.host('client2').netns}"
        argv = ["nsenter", f"--net={ns}", sys.executable, "-m", "tuner", "experiment", "run",
                str(spec), "--out", str(out), "--json", "--no-plots"]  # fmt: skip
        return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=as_in_a_terminal)  # fmt: skip

    def wait_for_load(self, proc: subprocess.Popen, arm: str, seconds: float) -> None:
        """Until ``arm``'s agent on the server host logs a window with load (the load has
        started); fails if the run ends first."""
        deadline = time.monotonic() + seconds
        while not any(map(_loaded, self.workdir.glob(f"run-*/*-{arm}/decisions.jsonl"))):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)


def _sshd(cluster: Cluster, host: str, tmp: Path) -> subprocess.Popen:
    """OpenSSH's server on ``host``'s address, in its network namespace only (so that the
    agent it starts sees this machine's bpffs and tracefs, as on a real host); returns once
    it listens."""
    h = cluster.host(host)
    cfg = tmp / f"sshd-{host}.conf"
    cfg.write_text(
        textwrap.dedent(f"""\
        ListenAddress {h.address}:22
        HostKey {tmp}/host_key
        AuthorizedKeysFile {tmp}/authorized_keys
        PidFile none
        StrictModes no
        UsePAM no
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PermitRootLogin prohibit-password
        Subsystem sftp internal-sftp
        """)
    )
    argv = ["nsenter", f"--net={NETNS_DIR}/{h.netns}", SSHD, "-D", "-e", "-f", str(cfg)]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()  # "Server listening on ADDRESS port 22."
    assert "listening" in line, line + proc.stderr.read()
    return proc


@pytest.fixture
def ssh_lab(tmp_path: Path) -> Iterator[SshLab]:
    made_run_dir = not os.path.exists("/run/sshd")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)],
                       check=True)  # fmt: skip
    shutil.copy(tmp_path / "client_key.pub", tmp_path / "authorized_keys")
    sshd: dict[str, subprocess.Popen] = {}
    try:
        with Cluster(clients=3) as c:  # server, client0, client1: SSH hosts; client2: controller
            host_key = (tmp_path / "host_key.pub").read_text().split()[:2]
            known = tmp_path / "known_hosts"
            known.write_text("".join(f"{h.address} {' '.join(host_key)}\n" for h in c.hosts))
            for name in ("server", "client0", "client1"):
                sshd[name] = _sshd(c, name, tmp_path)
            workdir = tmp_path / "remote"
            yield SshLab(c, sshd, tmp_path / "client_key", known, workdir)
    finally:
        stop_processes(list(sshd.values()))
        if made_run_dir:
            shutil.rmtree("/run/sshd", ignore_errors=True)


def test_an_experiment_runs_over_ssh_survives_a_lost_host_and_leaves_nothing(ssh_lab, tmp_path):
    """Two arms on SSH hosts against nginx from Debian: nginx, the agent and the load
    generators started through SSH; nginx's workers found on the server host (``tuner group
    --json`` there) in the order the agent steers them, every answer naming its worker;
    samples, decision logs, nginx's logs and the trace fetched through SFTP. Client host 1
    dies (every process in it killed, its SSH server too) while the last arm runs: that arm
    fails with the host named, the run exits non-zero, what the other hosts wrote is fetched
    all the same, and no work folder or process is left on the hosts."""
    spec = ssh_lab.spec(tmp_path / "ssh.toml", ["active", "shadow"], 3, 'kind = "nginx"')
    proc = ssh_lab.experiment(spec, tmp_path / "out")
    try:
        ssh_lab.wait_for_load(proc, "shadow", 180)  # the shadow arm's agent decides
        for pid in namespace_pids(ssh_lab.cluster.host("client1").netns):
            with contextlib.suppress(ProcessLookupError):  # exited since it was listed
                os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1 and "arm shadow failed" in stderr, stderr
    arms = json.loads(stdout)["arms"]
    assert not arms["active"].get("failed"), arms["active"]
    assert arms["active"]["requests"] > 300, arms["active"]  # both clients' samples came back
    out = tmp_path / "out"
    decisions = (out / "active" / "decisions.jsonl").read_text().splitlines()
    assert sum("window" in json.loads(d) for d in decisions) >= 10
    assert "pids" not in (out / "active" / "agent.toml").read_text()  # found them itself
    workers = pq.read_table(out / "samples.parquet").column("worker").to_pylist()
    assert {0, 1, 2, 3} <= set(workers)  # every answer named its worker, in target order
    for arm in ("active", "shadow"):
        assert (out / arm / "nginx" / "nginx.conf").exists()  # nginx's files fetched
        assert not (out / arm / "nginx" / "www").exists()  # but not its document root
    shadow = arms["shadow"]
    assert "client1" in shadow["failed"], shadow
    assert (out / "shadow" / "decisions.jsonl").stat().st_size > 0
    assert read_trace(str(out / "shadow" / "trace.parquet")).windows > 0  # fetched whole
    assert shadow["requests"] > 0  # client host 0's samples
    assert list(ssh_lab.workdir.iterdir()) == []  # every run folder removed on the hosts
    assert not _running(str(ssh_lab.workdir))  # nginx and the agent stopped there


def test_ctrl_c_stops_what_runs_on_the_hosts_and_keeps_what_was_measured(ssh_lab, tmp_path):
    """Ctrl-C while an arm runs on SSH hosts (the reference server): the runner stops, says
    the run was interrupted (exit 130), fetches the arm's files, and nothing keeps running
    on the hosts, nor is any work folder left there."""
    spec = ssh_lab.spec(tmp_path / "ssh.toml", ["active"], 60)
    proc = ssh_lab.experiment(spec, tmp_path / "out")
    try:
        ssh_lab.wait_for_load(proc, "active", 120)
        assert _running(str(ssh_lab.workdir))  # the agent runs there, its files in the workdir
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in stderr, stderr
    assert json.loads(stdout)["arms"]["active"]["interrupted"]
    assert (tmp_path / "out" / "active" / "decisions.jsonl").stat().st_size > 0  # fetched
    assert list(ssh_lab.workdir.iterdir()) == [] and not _running(str(ssh_lab.workdir))
    on_hosts = {p for h in ssh_lab.cluster.hosts for p in namespace_pids(h.netns)}
    assert not on_hosts & set(_running("tuner.workload"))  # nor the server, nor the loads
