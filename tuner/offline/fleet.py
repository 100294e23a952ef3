"""``tuner train --dataset``: one model from many nodes' traces, without loading them whole.

The dataset (:mod:`tuner.trace.dataset`) is planned from its Parquet footers: each node gets
an equal share of ``sample_rows``, split over its recordings by their size. Then one recording
at a time is read, its features built exactly as for one trace, split by time (the last
``holdout`` of its windows held out), and a uniform sample of its training and held-out rows
kept; the recording is dropped before the next is read. Memory is bounded by the largest
recording plus the sample, not by the dataset. The error is reported per node beside the
fleet's, so a node the fleet model serves badly shows.

>>> import tempfile, os
>>> from tuner.trace.dataset import dataset_path
>>> from tuner.offline.train import synthetic_trace
>>> root, out = tempfile.mkdtemp(), os.path.join(tempfile.mkdtemp(), "m")
>>> for i, node in enumerate(("a", "b", "c")):
...     _ = synthetic_trace(dataset_path(root, node, 0.0, 1), windows=500, entities=2, seed=i)
>>> meta = train_dataset(root, out, sample_rows=1200, max_iter=20)
>>> sorted(meta["per_node"]), meta["sample"]["nodes"]
(['a', 'b', 'c'], 3)
>>> all(n["holdout_rows"] > 0 for n in meta["per_node"].values())
True
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from typing import Any

import numpy as np

from tuner.errors import TunerError
from tuner.learn import boost
from tuner.learn.trees import TreeEnsemble
from tuner.offline.train import Fit, Progress, fit_and_save, prepare_out, trace_features
from tuner.trace.dataset import Recording, recordings
from tuner.trace.reader import read_trace
from tuner.trace.store import is_url, local_copy, split_url


def plan(recs: list[Recording], sample_rows: int) -> dict[str, int]:
    """Rows to keep from each recording (by path): ``sample_rows`` split equally between
    nodes, and within a node in proportion to each recording's rows.

    >>> r = [Recording("a", "d", "1", "a1", 100), Recording("a", "d", "2", "a2", 300),
    ...      Recording("b", "d", "1", "b1", 1000)]
    >>> plan(r, 400)
    {'a1': 50, 'a2': 150, 'b1': 200}
    """
    by_node: dict[str, list[Recording]] = defaultdict(list)
    for r in recs:
        by_node[r.node].append(r)
    share = sample_rows / max(1, len(by_node))
    out = {}
    for node_recs in by_node.values():
        total = sum(r.rows for r in node_recs) or 1
        for r in node_recs:
            out[r.path] = min(r.rows, int(share * r.rows / total))
    return out


def _pick(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` of the rows where ``mask`` holds, chosen uniformly, in time order."""
    rows = np.flatnonzero(mask)
    if k >= len(rows):
        return rows
    return np.sort(rng.choice(rows, size=k, replace=False))


def train_dataset(
    root: str,
    out: str,
    sample_rows: int = 2_000_000,
    holdout: float = 0.2,
    max_iter: int = 200,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train one model on a sample of every node's recordings under ``root``; save it to
    ``out``. Returns the model's metadata, with ``per_node`` held-out errors and ``sample``."""
    say = progress or (lambda _msg: None)
    recs = recordings(root)  # before anything is made: a bad root leaves nothing behind
    made = prepare_out(out)
    try:
        return _train(root, recs, out, sample_rows, holdout, max_iter, seed, say)
    except BaseException:
        if made:
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise


def _train(root, recs, out, sample_rows, holdout, max_iter, seed, say) -> dict[str, Any]:
    t0 = time.monotonic()
    rng = np.random.default_rng(seed)
    keep = plan(recs, sample_rows)
    nodes = sorted({r.node for r in recs})
    total = sum(r.rows for r in recs)
    say(f"{len(recs)} recordings from {len(nodes)} nodes, {total} rows; sampling {sample_rows}")
    Xs, ys, trains, tests, node_of, trained_on = [], [], [], [], [], []
    window_ms: set[Any] = set()
    threshold = None
    for i, r in enumerate(recs):
        trace = _read(root, r)
        window_ms.add(trace.meta.get("window_ms"))
        if len(window_ms) > 1:  # said at once, not after reading the rest of the dataset
            raise TunerError(
                f"the dataset's recordings have different window lengths ({sorted(window_ms)} ms)",
                "train on recordings made with one agent.window_ms",
            )
        if threshold is None:
            threshold = float(trace.meta.get("agent", {}).get("model.hot_threshold", 0.8))
        X, y, win = trace_features(trace)
        tr, te, split = boost.time_split(win, holdout)
        k = keep[r.path]
        train_idx = _pick(tr, int(k * (1 - holdout)), rng)
        test_idx = _pick(te, k - len(train_idx), rng)
        idx = np.concatenate([train_idx, test_idx])
        Xs.append(X[idx])
        ys.append(y[idx])
        trains.append(np.arange(len(idx)) < len(train_idx))
        tests.append(np.arange(len(idx)) >= len(train_idx))
        node_of.append(np.full(len(idx), nodes.index(r.node)))
        trained_on.append({"node": r.node, "date": r.date, "run": r.run, "rows": r.rows,
                           "sampled": int(len(idx)), "split_window": split})  # fmt: skip
        del trace, X, y, win
        if (i + 1) % max(1, len(recs) // 20) == 0 or i + 1 == len(recs):
            say(f"read {i + 1}/{len(recs)} recordings ({time.monotonic() - t0:.0f} s)")
    X, y = np.concatenate(Xs), np.concatenate(ys)
    train_rows, test_rows = np.concatenate(trains), np.concatenate(tests)
    node = np.concatenate(node_of)
    read_s = time.monotonic() - t0
    fit = Fit(window_ms.pop(), threshold or 0.8, holdout, max_iter, trained_on)
    extra = {
        "dataset": split_url(root)[0] if is_url(root) else os.path.abspath(root),
        "sample": {"rows": int(len(y)), "of": total, "nodes": len(nodes), "recordings": len(recs)},
    }

    def scored(trees: TreeEnsemble) -> dict[str, Any]:
        return {"per_node": per_node(trees, X, y, test_rows, node, nodes, fit.threshold)}

    return fit_and_save(X, y, train_rows, test_rows, out, fit, t0, read_s, say, extra, scored)


def _read(root: str, r: Recording) -> Any:
    """The recording ``r`` of the dataset at ``root`` (copied out of an object store first)."""
    with local_copy(root, r.rel) as path:
        return read_trace(path)


def per_node(trees, X, y, test_rows, node, nodes, threshold) -> dict[str, dict[str, Any]]:
    """Held-out error of the trees and of the last value, node by node, scored as
    :func:`evaluate_dataset` scores them (a precision with no hotspot predicted is None)."""
    load = X[:, 0]
    result = {}
    for i, name in enumerate(nodes):
        rows = test_rows & (node == i)
        pred = np.clip(load[rows] + trees.predict(X[rows]), 0.0, None) if rows.any() else load[rows]
        scores = _scores(_tally(pred, load[rows], y[rows], threshold))
        result[name] = {"holdout_rows": scores.pop("rows"), **scores}
    return result


def evaluate_dataset(root: str, model_path: str, progress: Progress | None = None) -> dict:
    """Score a saved model against the last value on every recording under ``root``, one
    recording in memory at a time: per node and for the fleet (rows pooled). Recordings the
    model was trained on are scored on their held-out windows only.

    >>> import tempfile, os
    >>> from tuner.trace.dataset import dataset_path
    >>> from tuner.offline.train import synthetic_trace, train
    >>> root, d = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> t = synthetic_trace(os.path.join(d, "t"), windows=500)
    >>> _ = train([t], os.path.join(d, "m"), max_iter=30)
    >>> for i, node in enumerate(("a", "b")):
    ...     _ = synthetic_trace(dataset_path(root, node, 0.0, 1), windows=300, seed=i + 1)
    >>> r = evaluate_dataset(root, os.path.join(d, "m"))
    >>> sorted(r["per_node"]), r["fleet"]["model_mae"] < r["fleet"]["baseline_mae"]
    (['a', 'b'], True)
    """
    from tuner.learn import modelfile

    say = progress or (lambda _msg: None)
    recs = recordings(root)
    saved = modelfile.load_model(model_path)
    model = boost.OfflineModel.from_saved(saved)
    threshold = float(saved.meta.get("hot_threshold", 0.8))
    splits = {(t.get("node"), t.get("date"), t.get("run")): t.get("split_window", 0)
              for t in saved.meta.get("trained_on", [])}  # fmt: skip
    sums: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(8))
    for i, r in enumerate(recs):
        trace = _read(root, r)
        saved.check(trace.meta.get("window_ms"))
        X, y, win = trace_features(trace)
        rows = win >= int(splits.get((r.node, r.date, r.run), 0))
        for chunk in np.array_split(np.flatnonzero(rows), max(1, int(rows.sum()) // 20000)):
            pred = np.clip(model.base_many(X[chunk]), 0.0, 4.0)
            sums[r.node] += _tally(pred, X[chunk, 0], y[chunk], threshold)
        say(f"scored {i + 1}/{len(recs)} recordings")
    fleet = sum(sums.values(), np.zeros(8))
    return {
        "dataset": root,
        "model": model_path,
        "version": saved.meta["version"],
        "recordings": len(recs),
        "fleet": _scores(fleet),
        "per_node": {node: _scores(s) for node, s in sorted(sums.items())},
    }


def _tally(pred, base, actual, threshold) -> np.ndarray:
    """Sums that pool across recordings: rows, absolute errors, hotspot counts."""
    hot = actual > threshold
    out = [len(actual), np.abs(pred - actual).sum(), np.abs(base - actual).sum(), hot.sum()]
    for p in (pred, base):
        said = p > threshold
        out += [said.sum(), (said & hot).sum()]
    return np.asarray(out, dtype=float)


def _scores(s: np.ndarray) -> dict[str, Any]:
    n, err_m, err_b, hot, said_m, tp_m, said_b, tp_b = (float(x) for x in s)
    return {
        "rows": int(n),
        "model_mae": round(err_m / n, 6) if n else None,
        "baseline_mae": round(err_b / n, 6) if n else None,
        "model_precision": round(tp_m / said_m, 4) if said_m else None,
        "model_recall": round(tp_m / hot, 4) if hot else None,
        "baseline_precision": round(tp_b / said_b, 4) if said_b else None,
        "baseline_recall": round(tp_b / hot, 4) if hot else None,
    }
