"""Training and evaluating over a fleet's traces: a dataset partitioned by node, date and run,
read one recording at a time and sampled by node (tuner.offline.fleet)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc

import pytest
from conftest import REPO, as_in_a_terminal, one_line_error, run_tuner

from tuner.errors import TunerError
from tuner.learn.features import FEATURES
from tuner.learn.modelfile import load_model
from tuner.offline.fleet import train_dataset
from tuner.offline.train import synthetic_trace
from tuner.trace.dataset import dataset_path, recordings
from tuner.trace.reader import read_trace
from tuner.trace.schema import COLUMNS

DAY = 86400.0


def fleet(root, nodes: int, windows: int = 600, days: int = 1) -> str:
    for i in range(nodes):
        for d in range(days):
            path = dataset_path(str(root), f"node-{i}", 20_000 * DAY + d * DAY, 100 + i)
            synthetic_trace(path, windows=windows, entities=4, seed=i * 10 + d)
    return str(root)


def test_train_and_evaluate_a_dataset_per_node_from_the_command_line(tmp_path):
    root = fleet(tmp_path / "ds", nodes=4, days=2)
    assert len(recordings(root)) == 8
    model = str(tmp_path / "m")
    r = run_tuner(
        "train", "--dataset", root, "--out", model, "--sample-rows", "6000",
        "--max-iter", "30", "--json", check=True,
    )  # fmt: skip
    meta = json.loads(r.stdout)
    assert meta["sample"] == {"rows": meta["sample"]["rows"], "of": 8 * 600 * 4, "nodes": 4,
                              "recordings": 8}  # fmt: skip
    assert 5900 <= meta["sample"]["rows"] <= 6000  # the sample, not the dataset
    assert sorted(meta["per_node"]) == [f"node-{i}" for i in range(4)]
    assert all(n["holdout_rows"] > 0 for n in meta["per_node"].values())
    # the model beats the last value on the held-out windows of every node
    assert all(n["model_mae"] < n["baseline_mae"] for n in meta["per_node"].values())
    saved = load_model(model)
    assert saved.meta["version"] == meta["version"] and meta["version"].startswith("sha256:")
    assert {(t["node"], t["date"]) for t in saved.meta["trained_on"]} == {
        (f"node-{i}", d) for i in range(4) for d in ("2024-10-04", "2024-10-05")
    }
    assert "progress" not in r.stderr and "read 8/8 recordings" in r.stderr

    ev = json.loads(
        run_tuner("evaluate", "--dataset", root, "--model", model, "--json", check=True).stdout
    )
    assert ev["version"] == meta["version"] and ev["recordings"] == 8
    # scored on the held-out windows only: the split the model saved, per recording
    assert ev["fleet"]["rows"] == sum(n["rows"] for n in ev["per_node"].values())
    assert ev["fleet"]["rows"] < 8 * 600 * 4 * 0.25
    text = run_tuner("evaluate", "--dataset", root, "--model", model, check=True).stdout
    assert "| node-3 |" in text and "| (fleet) |" in text


def test_memory_follows_the_sample_not_the_dataset(tmp_path):
    """Four times the nodes at the same sample size: the peak of Python-side memory (numpy
    arrays included) does not grow with the data, and stays far below what the whole
    dataset would take read whole."""

    def peak(nodes: int, windows: int = 2000) -> int:
        root = fleet(tmp_path / f"ds{nodes}", nodes=nodes, windows=windows)
        tracemalloc.start()
        try:
            train_dataset(root, str(tmp_path / f"m{nodes}"), sample_rows=4000, max_iter=10)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(1, windows=300)  # imports and one-off allocations out of the way
    small, large = peak(2), peak(8)
    # the 8 nodes' rows read whole: their trace columns and feature rows, 8 bytes a value
    whole = 8 * 2000 * 4 * (len(COLUMNS) + len(FEATURES)) * 8
    print(f"peak {small} B with 2 nodes, {large} B with 8; the whole dataset {whole} B")
    assert large < 1.5 * small and large < whole / 2, (small, large, whole)


def test_bad_datasets_get_one_line_errors_and_leave_no_model(tmp_path):
    root = fleet(tmp_path / "ds", nodes=2, windows=200)
    out = tmp_path / "m"

    def refused(path: str, *words: str) -> None:
        with pytest.raises(TunerError) as e:
            train_dataset(path, str(out), max_iter=5)
        assert all(w in str(e.value) for w in words), e.value
        assert not out.exists()  # nothing left behind

    refused(str(tmp_path / "none"), "not a directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(str(empty), "no completed")
    stray = os.path.join(root, "node-0", "part-00000.parquet")
    os.makedirs(os.path.dirname(stray), exist_ok=True)
    with open(stray, "wb") as f:
        f.write(b"PAR1 not really")
    refused(root, stray, "layout")
    os.unlink(stray)
    (part,) = [r.path for r in recordings(root) if r.node == "node-1"]
    with open(os.path.join(part, "part-00000.parquet"), "r+b") as f:
        f.truncate(100)  # a corrupt part
    # from the command line: one line, no traceback, no model
    one_line_error(run_tuner("train", "--dataset", root, "--out", str(out)), "part-00000.parquet")
    assert not out.exists()
    one_line_error(run_tuner("record", "--out", str(tmp_path / "t"), "--node", "x", "--pid", "1"),
                   "--node")  # fmt: skip
    one_line_error(
        run_tuner("evaluate", "--dataset", root, "--model", "m", "--out", "x"), "--trace only"
    )
    with pytest.raises(TunerError, match="a/b"):
        dataset_path(root, "a/b", 0.0, 1)


@pytest.mark.kernel
def test_two_nodes_record_into_one_dataset_and_a_fleet_model_trains_on_it(served, tmp_path):
    c, pids, load = served
    gen = load(120, profile="shifting-hotspot", profile_args={"shift_s": 1.0})
    root = tmp_path / "ds"
    procs = []
    try:
        for node, half in (("edge-a", pids[:2]), ("edge-b", pids[2:])):
            argv = [sys.executable, "-m", "tuner", "record", "--dataset", str(root),
                    "--node", node, "--part-seconds", "1", "--window-ms", "50"]  # fmt: skip
            for p in half:
                argv += ["--pid", str(p)]
            procs.append(subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True,
                                          preexec_fn=as_in_a_terminal))  # fmt: skip

        def parts(node: str) -> int:
            return len(list(root.glob(f"node={node}/date=*/run=*/part-*.parquet")))

        deadline = time.monotonic() + 90
        while parts("edge-a") < 3 or parts("edge-b") < 3:  # enough windows for a split
            assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs]
            assert time.monotonic() < deadline, "no parts written"
            time.sleep(0.2)
        for p in procs:
            p.send_signal(signal.SIGINT)  # Ctrl-C: the part in progress is closed
        outs = [p.communicate(timeout=30) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        gen.kill()
        run_tuner("cleanup")
    recs = recordings(str(root))
    assert [r.node for r in recs] == ["edge-a", "edge-b"]
    for r in recs:
        t = read_trace(r.path)
        assert t.entities == ["worker:0", "worker:1"] and t.windows >= 30
    meta = json.loads(
        run_tuner("train", "--dataset", str(root), "--out", str(tmp_path / "m"),
                  "--max-iter", "20", "--json", check=True).stdout
    )  # fmt: skip
    assert sorted(meta["per_node"]) == ["edge-a", "edge-b"]
    assert meta["window_ms"] == 50 and meta["sample"]["recordings"] == 2


def test_bench_fleet_train_checks_its_arguments(tmp_path):
    one_line_error(run_tuner("bench", "fleet-train", "--nodes", "0"), "--nodes")
    one_line_error(run_tuner("bench", "fleet-train", "--dir", str(tmp_path / "no")), "--dir")
