"""``tuner train``: recorded traces in, a saved model out (see :mod:`tuner.learn.boost`).

>>> import tempfile, os, numpy as np
>>> d = tempfile.mkdtemp()
>>> trace = synthetic_trace(os.path.join(d, "t.parquet"), windows=400, entities=4)
>>> result = train([trace], os.path.join(d, "m"), max_iter=30)
>>> result["metrics"]["holdout_model_mae"] < result["metrics"]["holdout_baseline_mae"]
True
>>> sorted(os.listdir(os.path.join(d, "m")))
['model.json', 'online.json', 'trees.npz']
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuner.errors import TunerError
from tuner.learn import boost, modelfile
from tuner.learn.trees import TreeEnsemble
from tuner.trace.reader import Trace, read_trace

Progress = Callable[[str], None]


def trace_features(trace: Trace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, window of each row) of one trace, built as the live agent builds them."""
    loads = trace.matrix("load")
    shares = np.nan_to_num(trace.matrix("share"), nan=1.0 / max(1, loads.shape[1]))
    runq = trace.matrix("runq_frac")
    return boost.feature_matrix(loads, shares, runq, trace.matrix("live_load"))


def train(
    paths: list[str],
    out: str,
    holdout: float = 0.2,
    max_iter: int = 200,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train on ``paths`` (time-ordered split per trace), save to ``out``; returns the
    model's metadata with its held-out metrics."""
    say = progress or (lambda _msg: None)
    made = prepare_out(out)
    try:
        return _train(paths, out, holdout, max_iter, say)
    except BaseException:
        if made:  # nothing of ours is left behind in a directory we made
            shutil.rmtree(out, ignore_errors=True)
        raise


def prepare_out(out: str) -> bool:
    """Check that ``out`` can take a new model before any work is done: refuse an existing
    file or a directory that already holds files (nothing is overwritten), and a place that
    cannot be written. Returns True when it made the directory.

    >>> import tempfile
    >>> prepare_out(tempfile.mkdtemp())
    False
    >>> prepare_out("/proc/version")
    Traceback (most recent call last):
    ...
    tuner.errors.TunerError: --out /proc/version exists and is not a directory; fix: give a \
new directory for the model
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise TunerError(
            f"--out {out} exists and is not a directory", "give a new directory for the model"
        )
    if os.path.isdir(out) and os.listdir(out):
        raise TunerError(
            f"--out {out} already holds files", "give a new directory, or remove the old model"
        )
    made = not os.path.exists(out)
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        raise TunerError(
            f"cannot write the model into {out}: {e.strerror}", "give a directory you can write"
        ) from None
    return made


def _train(paths, out, holdout, max_iter, say) -> dict[str, Any]:
    t0 = time.monotonic()
    traces = []
    for p in paths:
        say(f"reading {p}")
        traces.append(read_trace(p))
    windows_ms = {t.meta.get("window_ms") for t in traces}
    if len(windows_ms) != 1:
        raise TunerError(
            "the traces have different window lengths "
            f"({', '.join(map(str, sorted(windows_ms)))} ms)",
            "train on traces recorded with one agent.window_ms",
        )
    threshold = float(traces[0].meta.get("agent", {}).get("model.hot_threshold", 0.8))
    read_s = time.monotonic() - t0
    say("building features")
    Xs, ys, trains, tests, trained_on = [], [], [], [], []
    for t in traces:
        X, y, win = trace_features(t)
        tr, te, split = boost.time_split(win, holdout)
        Xs.append(X)
        ys.append(y)
        trains.append(tr)
        tests.append(te)
        trained_on.append(
            {
                "path": os.path.abspath(t.path),
                "started": t.meta.get("started"),
                "windows": t.windows,
                "entities": len(t.entities),
                "split_window": split,
            }
        )
    X, y = np.concatenate(Xs), np.concatenate(ys)
    train_rows, test_rows = np.concatenate(trains), np.concatenate(tests)
    fit = Fit(windows_ms.pop(), threshold, holdout, max_iter, trained_on)
    return fit_and_save(X, y, train_rows, test_rows, out, fit, t0, read_s, say)


@dataclass(frozen=True)
class Fit:
    """What a model is trained with and on, saved in its metadata."""

    window_ms: int
    threshold: float
    holdout: float
    max_iter: int
    trained_on: list[dict[str, Any]]


def fit_and_save(
    X: np.ndarray,
    y: np.ndarray,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    out: str,
    fit: Fit,
    t0: float,
    read_s: float,
    say: Progress,
    extra: dict[str, Any] | None = None,
    scored: Callable[[TreeEnsemble], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Fit the trees on the ``train_rows`` of ``X`` and ``y``, score them on ``test_rows``,
    warm-start the online model and save everything to ``out``; returns the metadata
    (``extra`` added to it, and what ``scored`` says of the trees)."""
    say(f"fitting gradient boosted trees on {int(train_rows.sum())} rows")
    trees, metrics = boost.fit(
        X, y, train_rows, test_rows, max_iter=fit.max_iter, threshold=fit.threshold
    )
    say("warm-starting the online model by replay")
    tail = np.flatnonzero(train_rows)[-boost.WARM_START_ROWS :]
    online = boost.warm_start(trees, X[tail], y[tail])
    metrics["train_s"] = round(time.monotonic() - t0, 3)
    metrics["read_s"] = round(read_s, 3)
    meta = {
        "window_ms": fit.window_ms,
        "hot_threshold": fit.threshold,
        "trained_on": fit.trained_on,
        "holdout": fit.holdout,
        "params": {
            "model": "LightGBM LGBMRegressor",
            "loss": "l1",
            "max_iter": fit.max_iter,
            "target": "next window's load minus this window's",
        },
        "metrics": metrics,
        "created": time.time(),
        "lightgbm": _version("lightgbm"),
        "river": _version("river"),
        **(extra or {}),
        **(scored(trees) if scored else {}),
    }
    meta["version"] = modelfile.save_model(out, trees, online, meta)
    say(f"saved {out} (version {meta['version']})")
    return meta


def _version(module: str) -> str:
    import importlib

    return str(getattr(importlib.import_module(module), "__version__", "?"))


def synthetic_loads(windows: int, entities: int, seed: int = 0) -> np.ndarray:
    """Loads with a hotspot that moves between entities every 300 windows, a period of 40
    windows, and noise: a pattern with structure that the last value predicts poorly.

    >>> synthetic_loads(5, 2).shape
    (5, 2)
    """
    rng = np.random.default_rng(seed)
    w = np.arange(windows)[:, None]
    e = np.arange(entities)[None, :]
    hot = (w // 300) % entities == e
    base = 0.35 + 0.15 * np.sin(2 * np.pi * w / 40 + e) + 0.4 * hot
    return np.clip(base + rng.normal(0, 0.08, (windows, entities)), 0, None)


def synthetic_trace(path: str, windows: int, entities: int = 4, seed: int = 0) -> str:
    """Write a trace of :func:`synthetic_loads` through :class:`TraceWriter` (column by
    column: a million windows in seconds)."""
    from tuner.trace.schema import base_meta
    from tuner.trace.writer import TraceWriter

    loads = synthetic_loads(windows, entities, seed)
    pids = list(range(1000, 1000 + entities))
    meta = base_meta(100, pids, {"synthetic": True, "seed": seed}, {"model.hot_threshold": 0.8})
    with TraceWriter(path, meta, part_mb=1e6, part_seconds=1e6) as w:
        w.add_columns(
            {
                "window": np.repeat(np.arange(windows, dtype=np.int64), entities),
                "t_end_ns": np.repeat(np.arange(1, windows + 1) * 100_000_000, entities),
                "entity": np.tile(np.array([f"worker:{i}" for i in range(entities)]), windows),
                "pid": np.tile(np.array(pids, dtype=np.int32), windows),
                "load": loads.reshape(-1),
                "runq_frac": (loads * 0.1).reshape(-1),
                "share": np.full(loads.size, 1.0 / entities),
                "pred_baseline": loads.reshape(-1),
                "mode": np.full(loads.size, "shadow"),
            }
        )
    return path
