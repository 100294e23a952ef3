"""``tuner bench fleet-train``: train over a fleet-sized dataset without loading it whole.

Writes a dataset of synthetic recordings (:func:`~tuner.offline.train.synthetic_trace`, one
per node, partitioned as :mod:`tuner.trace.dataset` lays it out), larger than a quarter of this
machine's memory by default, then runs ``tuner train --dataset`` on it as a child process and
reports its wall time and peak resident memory (the child's ``ru_maxrss``) beside the
dataset's size: in memory as Arrow would hold it read whole, and on disk.

>>> r = run(nodes=2, windows=300, entities=2, sample_rows=500, max_iter=5)
>>> r["nodes"], r["rows"], r["peak_rss_bytes"] > 0, r["dataset_decoded_bytes"] > 0
(2, 1200, True, True)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from tuner.errors import TunerError


def mem_total() -> int:
    """This machine's memory in bytes (MemTotal of /proc/meminfo)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise TunerError("/proc/meminfo has no MemTotal", "run on Linux with /proc mounted")


def sizes(root: str) -> tuple[int, int]:
    """(in memory, on disk) bytes of every completed part under ``root``: in memory as Arrow
    holds it once decoded (the bytes a row takes in the first part, read whole, times the rows
    the footers count), and the files' own sizes."""
    import pyarrow.parquet as pq

    parts = sorted(
        os.path.join(d, n)
        for d, _s, names in os.walk(root)
        for n in names
        if n.endswith(".parquet")
    )
    if not parts:
        return 0, 0
    first = pq.read_table(parts[0])
    per_row = first.nbytes / max(1, first.num_rows)
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    return int(rows * per_row), sum(os.path.getsize(p) for p in parts)


def run(
    nodes: int = 48,
    windows: int = 20_000,
    entities: int = 64,
    sample_rows: int = 2_000_000,
    max_iter: int = 200,
    where: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write the dataset (in a new directory under ``where``, removed afterwards), train on
    it in a child process, and return the figures."""
    from tuner.offline.train import synthetic_trace
    from tuner.trace.dataset import dataset_path

    say = progress or (lambda _msg: None)
    work = tempfile.mkdtemp(prefix="tuner-bench-fleet-", dir=where)
    try:
        root = os.path.join(work, "dataset")
        t0 = time.monotonic()
        for i in range(nodes):
            started = 1.7e9 + 86400 * (i % 7)  # a week of dates
            synthetic_trace(dataset_path(root, f"node-{i:03d}", started, 1000 + i), windows,
                            entities, seed=i)  # fmt: skip
            say(f"wrote node {i + 1}/{nodes} ({time.monotonic() - t0:.0f} s)")
        gen_s = time.monotonic() - t0
        decoded, disk = sizes(root)
        say(f"dataset: {decoded / 1e9:.2f} GB in memory, {disk / 1e9:.2f} GB on disk; training")
        argv = [sys.executable, "-m", "tuner", "train", "--dataset", root,
                "--out", os.path.join(work, "model"), "--sample-rows", str(sample_rows),
                "--max-iter", str(max_iter), "--json"]  # fmt: skip
        t1 = time.monotonic()
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            child = subprocess.Popen(argv, stdout=out, stderr=err)
            _pid, status, usage = os.wait4(child.pid, 0)  # its own peak memory, not ours
            child.returncode = os.waitstatus_to_exitcode(status)
            train_s = time.monotonic() - t1
            out.seek(0)
            err.seek(0)
            if child.returncode:
                last = (err.read().strip().splitlines() or ["?"])[-1]
                raise TunerError(f"tuner train failed: {last}")
            meta = json.loads(out.read())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    m = meta["metrics"]
    worst = max(meta["per_node"].items(), key=lambda kv: kv[1]["model_mae"] / kv[1]["baseline_mae"])
    total = mem_total()
    return {
        "nodes": nodes,
        "rows": nodes * windows * entities,
        "dataset_decoded_bytes": decoded,
        "dataset_disk_bytes": disk,
        "mem_total_bytes": total,
        "dataset_over_memory": round(decoded / total, 3),
        "generate_s": round(gen_s, 1),
        "train_s": round(train_s, 1),
        "peak_rss_bytes": int(usage.ru_maxrss) * 1024,  # Linux reports kilobytes
        "sample_rows": meta["sample"]["rows"],
        "holdout_model_mae": m.get("holdout_model_mae"),
        "holdout_baseline_mae": m.get("holdout_baseline_mae"),
        "worst_node": worst[0],
        "worst_node_mae_vs_baseline": round(worst[1]["model_mae"] / worst[1]["baseline_mae"], 3),
    }


def render(r: dict[str, Any]) -> str:
    """The figures as lines of text."""
    gb = 1e9
    return "\n".join([
        f"dataset: {r['nodes']} nodes, {r['rows']} rows, {r['dataset_decoded_bytes'] / gb:.2f} GB"
        f" read whole ({r['dataset_over_memory']:.2f} of this machine's"
        f" {r['mem_total_bytes'] / gb:.1f} GB), {r['dataset_disk_bytes'] / gb:.2f} GB on disk;"
        f" written in {r['generate_s']} s",
        f"tuner train --dataset: {r['train_s']} s, peak resident memory"
        f" {r['peak_rss_bytes'] / gb:.2f} GB, sample {r['sample_rows']} rows",
        f"held out: MAE {r['holdout_model_mae']} vs last value {r['holdout_baseline_mae']};"
        f" worst node {r['worst_node']}: {r['worst_node_mae_vs_baseline']} of its last value's",
    ])  # fmt: skip
