"""``tuner evaluate``: a saved model against the last-value baseline on a trace, offline.

Two questions, answered on the same windows:

1. **Predictions.** The saved model's trees predict each window's next load from the trace's
   features; MAE and hotspot precision / recall are set against the last value, and against
   the online model whose predictions the trace recorded.
2. **Decisions (counterfactual).** The trace is replayed through the agent (see
   :mod:`tuner.offline.replay`) once with the saved model and once with the last-value
   predictor. For each, the tables the policy would have chosen are compared with the shares
   that would have balanced the load that followed (half the L1 distance; 0 is perfect).

When the trace is one the model was trained on, only its held-out windows are scored.

>>> import tempfile, os
>>> from tuner.offline.train import synthetic_trace, train
>>> d = tempfile.mkdtemp()
>>> t = synthetic_trace(os.path.join(d, "t.parquet"), windows=500)
>>> _ = train([t], os.path.join(d, "m"), max_iter=30)
>>> r = evaluate(t, os.path.join(d, "m"))
>>> r["scored_from_window"], r["model_mae"] < r["baseline_mae"]
(399, True)
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tuner.learn import boost, modelfile
from tuner.offline.replay import config_of, replay
from tuner.offline.train import trace_features
from tuner.policy.shares import SharePolicy, distance
from tuner.trace.reader import read_trace


def _gap(shares: np.ndarray, loads: np.ndarray, policy: SharePolicy, start: int) -> float:
    """Mean distance from the shares chosen at window w to the balancing shares of w + 1."""
    gaps = []
    current = np.full(shares.shape[1], 1.0 / shares.shape[1])
    for w in range(len(shares) - 1):
        if not np.isnan(shares[w]).any():
            current = shares[w]
        if w >= start:
            gaps.append(distance(current.tolist(), policy.target_shares(loads[w + 1].tolist())))
    return round(float(np.mean(gaps)), 6) if gaps else float("nan")


def evaluate(trace_path: str, model_path: str, out: str | None = None) -> dict[str, Any]:
    """Score ``model_path`` on ``trace_path``; with ``out``, write PNG plots there too."""
    trace = read_trace(trace_path)
    saved = modelfile.load_model(model_path)
    saved.check(trace.meta.get("window_ms"))
    threshold = float(saved.meta.get("hot_threshold", 0.8))
    start, note = 0, ""
    for t in saved.meta.get("trained_on", []):
        if t.get("started") is not None and t.get("started") == trace.meta.get("started"):
            start = int(t["split_window"])
            note = f"the model was trained on this trace: scoring its held-out windows {start}+"
    X, y, win = trace_features(trace)
    rows = win >= start
    model = boost.OfflineModel.from_saved(saved)
    chunks = np.array_split(X[rows], max(1, rows.sum() // 20000))
    pred = np.concatenate([np.clip(model.base_many(c), 0.0, 4.0) for c in chunks])
    base = X[rows, 0]
    result: dict[str, Any] = {
        "trace": trace_path,
        "model": model_path,
        "windows": trace.windows,
        "entities": len(trace.entities),
        "scored_from_window": start,
        "rows_scored": int(rows.sum()),
        "note": note,
    }
    scores = boost.scores(pred, base, y[rows], threshold, "")
    result.update(scores)
    recorded = trace.matrix("pred_load")[:-1].reshape(-1)[rows]
    if (~np.isnan(recorded)).any():
        ok = ~np.isnan(recorded)
        result["recorded_online_mae"] = round(float(np.abs(recorded[ok] - y[rows][ok]).mean()), 6)
    # counterfactual decisions: the same policy fed by each predictor
    loads = np.nan_to_num(trace.matrix("load"), nan=0.0)
    cfg = config_of(trace)
    policy = SharePolicy(capacity=cfg.get("policy.capacity"), min_share=cfg.get("policy.min_share"))
    with_model = replay(trace, cfg.with_values(model__path=os.path.abspath(model_path)))
    with_last = replay(trace, cfg.with_values(model__kind="last", model__path=""))
    result["decisions_model"] = with_model.decisions
    result["decisions_last_value"] = with_last.decisions
    result["gap_model"] = _gap(with_model.shares, loads, policy, start)
    result["gap_last_value"] = _gap(with_last.shares, loads, policy, start)
    recorded_shares = trace.matrix("decided_share")
    if (~np.isnan(recorded_shares)).any():
        result["gap_recorded"] = _gap(recorded_shares, loads, policy, start)
    if out:
        os.makedirs(out, exist_ok=True)
        result["plots"] = _plots(trace, X, y, win, rows, pred, with_model.shares, start, out)
    return result


def render(r: dict[str, Any]) -> str:
    """The result as a table."""
    lines = [
        f"trace {r['trace']}: {r['windows']} windows x {r['entities']} entities;"
        f" scored {r['rows_scored']} rows from window {r['scored_from_window']}",
    ]
    if r["note"]:
        lines.append(r["note"])
    lines += [
        "",
        "| predictor | MAE | hotspot precision | hotspot recall | decisions | gap to balanced |",
        "|---|---|---|---|---|---|",
        f"| saved model | {r['model_mae']} | {r['model_precision']} | {r['model_recall']} |"
        f" {r['decisions_model']} | {r['gap_model']} |",
        f"| last value | {r['baseline_mae']} | {r['baseline_precision']} |"
        f" {r['baseline_recall']} | {r['decisions_last_value']} | {r['gap_last_value']} |",
    ]
    if "recorded_online_mae" in r:
        lines.append(
            f"| recorded online model | {r['recorded_online_mae']} | | | |"
            f" {r.get('gap_recorded', '')} |"
        )
    for p in r.get("plots", []):
        lines.append(f"plot: {p}")
    return "\n".join(lines)


def _plots(trace, X, y, win, rows, pred, shares, start, out) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = len(trace.entities)
    ent = np.flatnonzero(rows)
    ent_idx = ent % m
    busiest = int(
        np.argmax([y[rows][ent_idx == i].var() if (ent_idx == i).any() else 0 for i in range(m)])
    )
    sel = ent_idx == busiest
    w = win[rows][sel][:400]
    paths = []
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(w + 1, y[rows][sel][:400], label="observed load", color="black", lw=1)
    ax.plot(w + 1, pred[sel][:400], label="saved model", lw=1)
    ax.plot(w + 1, X[rows][sel][:400, 0], label="last value", lw=1, alpha=0.6)
    ax.set_xlabel("window")
    ax.set_ylabel("load (CPUs)")
    ax.set_title(f"{trace.entities[busiest]}: predicted vs observed")
    ax.legend(loc="upper right")
    fig.tight_layout()
    paths.append(os.path.join(out, "predictions.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, p in (("saved model", pred), ("last value", X[rows, 0])):
        err = np.sort(np.abs(p - y[rows]))
        ax.plot(err, np.linspace(0, 1, len(err)), label=name)
    ax.set_xlabel("absolute error (CPUs)")
    ax.set_ylabel("fraction of windows")
    ax.legend()
    fig.tight_layout()
    paths.append(os.path.join(out, "error_cdf.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 3.5))
    for i, e in enumerate(trace.entities):
        ax.plot(np.arange(start, len(shares)), shares[start:, i], label=e, lw=1)
    ax.set_xlabel("window")
    ax.set_ylabel("share chosen")
    ax.set_title("counterfactual: tables the policy would have chosen with the saved model")
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    paths.append(os.path.join(out, "shares.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
