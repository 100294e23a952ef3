"""The test cluster and the reference workload, on real namespaces and sockets."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tuner.cluster import Cluster, leftovers
from tuner.cluster.netutil import ETHTOOL_GTXCSUM, ethtool_value, namespace_pids

pytestmark = pytest.mark.kernel


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip() for line in out.splitlines()}


def test_cluster_up_down_leaves_nothing_also_when_the_body_raises():
    before_links = _links()
    c = Cluster(clients=2)
    names, pids = [], []
    with pytest.raises(RuntimeError), c:
        names = [h.netns for h in c.hosts] + [c.switch]
        assert set(names) == set(leftovers(tags=[c.tag]))
        p = c.popen("server", ["sleep", "60"])
        pids = [p.pid] + namespace_pids(c.host("client0").netns)
        raise RuntimeError("the body fails")
    assert not leftovers(tags=[c.tag])  # its own only: other kernel tests run beside
    assert not set(names) & set(os.listdir("/var/run/netns"))
    assert _links() == before_links  # nothing in the machine's own namespace
    assert all(not os.path.exists(f"/proc/{pid}") for pid in pids)


def test_switch_ports_fill_in_checksums_so_xdp_redirect_on_a_host_is_safe():
    # without this, TCP through a cpumap redirect on a host's eth0 stalls on bad checksums
    with Cluster(clients=1) as c:
        ports = [h.port for h in c.hosts]
        assert [ethtool_value(ETHTOOL_GTXCSUM, p, c.switch) for p in ports] == [0] * len(ports)
        assert (
            ethtool_value(ETHTOOL_GTXCSUM, "eth0", c.host("server").netns) == 1
        )  # the hosts keep theirs


def test_cluster_down_command_removes_what_a_crash_left(tuner_cli):
    c = Cluster(clients=1).up()  # never taken down: as if the experiment was SIGKILLed
    c.popen("server", ["sleep", "60"])
    r = tuner_cli("cluster", "down", c.tag)  # this cluster's only: other tests run beside
    assert r.returncode == 0 and f"removed {c.host('server').netns}" in r.stdout
    assert f"removed {c.switch}" in r.stdout and not leftovers(tags=[c.tag])
    assert f"no cluster namespaces tagged {c.tag}" in tuner_cli("cluster", "down", c.tag).stdout
    c.down()  # lets go of the namespace fds this process held


def test_a_namespace_that_lost_its_name_is_put_back_with_its_links():
    with Cluster(clients=1) as c:
        path = f"/var/run/netns/{c.host('server').netns}"
        subprocess.run(["umount", "-l", path], check=True)  # what was seen on CI, on purpose
        os.unlink(path)
        p = c.popen("server", ["ip", "-o", "addr", "show", "eth0"], stdout=subprocess.PIPE)
        out, _ = p.communicate(timeout=30)
        assert p.returncode == 0 and c.host("server").address in out.decode()


FORKED_CHILD_SIGTERMED = """
import os, signal, sys, time
from tuner.cli import _terminate_for
from tuner.cluster import Cluster
signal.signal(signal.SIGTERM, _terminate_for(os.getpid()))
with Cluster(clients=1) as c:
    names = [h.netns for h in c.hosts] + [c.switch]
    pid = os.fork()  # as pyroute2 does for a namespaced socket, then SIGTERMs the child
    if pid == 0:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        os._exit(3)
    os.waitpid(pid, 0)
    missing = [n for n in names if not os.path.exists("/var/run/netns/" + n)]
    print("missing:", missing)
"""


def test_a_forked_child_that_gets_sigterm_leaves_the_cluster_alone():
    """A CI run lost its server namespace while the cluster came up: pyroute2's forked helper
    got SIGTERM, the inherited handler unwound the parent's stack in the child, and the
    child's copy of the cluster deleted the namespaces."""
    r = subprocess.run(
        [sys.executable, "-c", FORKED_CHILD_SIGTERMED], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "missing: []" in r.stdout


def _serve_and_load(c: Cluster, spec: dict, server_args=()) -> tuple[dict, np.ndarray, list]:
    srv = c.popen(
        "server",
        [sys.executable, "-m", "tuner.workload.server", "--workers", "4", *server_args],
        stdout=subprocess.PIPE,
        text=True,
    )
    pids = json.loads(srv.stdout.readline())["workers"]
    out = f"/tmp/tuner-test-samples-{os.getpid()}.npy"
    spec = {"host": c.host("server").address, **spec}
    lg = c.popen(
        "client0",
        [
            sys.executable,
            "-m",
            "tuner.workload.loadgen",
            "--config",
            json.dumps(spec),
            "--out",
            out,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    stdout, _ = lg.communicate(timeout=120)
    final = json.loads(stdout.splitlines()[-1])
    samples = np.load(out)
    os.unlink(out)
    return final, samples, pids


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
def test_workload_delivers_every_request(udp):
    spec = {
        "rate": 1500,
        "seconds": 30,
        "connections": 16,
        "service": "exp:200",
        "lifetime_s": 0.2,  # plenty of reconnects
        "max_requests": 3000,
        "udp": udp,
    }
    with Cluster(clients=1) as c:
        final, samples, pids = _serve_and_load(c, spec, ["--udp"] if udp else [])
    assert final["requests"] == final["answered"] == 3000 and final["errors"] == 0
    assert samples.size == 3000 and (samples["ok"] == 1).all()
    served = np.bincount(samples["worker"], minlength=4)
    assert (served > 0).all(), served  # the kernel spread connections over all 4 workers
    assert np.isfinite(samples["latency"]).all() and (samples["latency"] > 0).all()
    assert len(pids) == 4


def test_heavy_hitters_profile_skews_requests_over_connections():
    spec = {
        "rate": 2000,
        "seconds": 30,
        "connections": 8,
        "service": "const:50",
        "profile": "heavy-hitters",
        "max_requests": 4000,
    }
    with Cluster(clients=1) as c:
        _, samples, _ = _serve_and_load(c, spec)
    per_conn = np.sort(np.bincount(samples["conn"], minlength=8))[::-1] / samples.size
    # Zipf(1) over 8: the top connection sends ~37 %, the last ~5 %
    assert 0.30 < per_conn[0] < 0.45 and per_conn[-1] < 0.08, per_conn


def test_loadgen_refuses_a_bad_config():
    r = subprocess.run(
        [sys.executable, "-m", "tuner.workload.loadgen", "--config", '{"host": "x", "rate": -1}'],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "rate must be positive" in r.stderr and "Traceback" not in r.stderr
