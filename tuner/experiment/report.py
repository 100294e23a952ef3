"""What an experiment writes: summary.json, samples.parquet, plots, report.md.

Per arm (requests sent after the warm-up only):

- ``requests``, ``errors`` (no answer, or a failed connection), ``throughput_rps``;
- ``p50_ms`` ... ``p99_9_ms``: latency from the scheduled send to the answer;
- ``imbalance``: per 1-s bucket, the busiest worker's service time over the mean worker's,
  averaged over buckets (1.0 is perfect balance);
- ``decisions_per_s``: tables the arm's controller changed per second (written ones in
  ``active``/``reactive``, would-be ones in ``shadow``);
- ``tuner_cpu_s``: CPU time the agent process used;
- ``failed`` (agent arms): why the arm is not a result, when its agent exited or spent more
  than a tenth of the measured windows in fall-back (``fallback_share``); a failed arm gets no
  ``p99_vs_kernel``;
- ``interrupted``: the arm was cut short by Ctrl-C; its rates are over the time it ran.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tuner.experiment.calibrate import Calibration, overloaded
from tuner.experiment.keys import BASES
from tuner.experiment.learned import client_metrics, learner_metrics
from tuner.experiment.rounds import side_by_side
from tuner.experiment.runner import ArmResult
from tuner.experiment.spec import ExperimentSpec
from tuner.experiment.tables import learning_table, notes, table, variant_line
from tuner.workload.loadgen import latency_percentiles
from tuner.workload.protocol import ServiceTime

BUCKET_S = 1.0


def worker_load(samples: np.ndarray, workers: int, bucket_s: float = BUCKET_S) -> np.ndarray:
    """Service time per worker per bucket as a fraction of the bucket: shape (buckets, workers).

    >>> from tuner.workload.loadgen import SAMPLE
    >>> x = np.zeros(2, dtype=SAMPLE); x["ok"] = 1; x["worker"] = [0, 1]
    >>> x["service_us"] = [500000, 250000]; x["t_send"] = [0.1, 0.2]
    >>> worker_load(x, 2).tolist()
    [[0.5, 0.25]]
    """
    ok = samples[samples["ok"] == 1]
    if ok.size == 0:
        return np.zeros((0, workers))
    buckets = int(samples["t_send"].max() // bucket_s) + 1
    out = np.zeros((buckets, workers))
    idx = (ok["t_send"] // bucket_s).astype(int)
    np.add.at(out, (idx, ok["worker"].astype(int)), ok["service_us"] / 1e6 / bucket_s)
    return out


def arm_metrics(r: ArmResult, spec: ExperimentSpec) -> dict[str, Any]:
    """The summary of one arm (see the module docstring)."""
    warm, dur = spec.get("warmup_s"), spec.get("duration_s")
    x = r.samples[r.samples["t_send"] >= warm]
    ok = x["ok"] == 1
    lat = x["latency"][ok] * 1e3
    ran = dur
    if r.interrupted:  # rates over the measured time the arm ran
        ran = max(float(r.samples["t_send"].max()) - warm, 1e-3) if r.samples.size else 1e-3
    out: dict[str, Any] = {
        "requests": int(x.size),
        "errors": int(x.size - ok.sum()),
        "throughput_rps": round(float(ok.sum()) / min(dur, ran), 1),
    }
    for key, v in latency_percentiles(lat, empty=None).items():
        out[key] = round(v, 3) if v is not None else None
    load = worker_load(x, spec.workers())[int(warm // BUCKET_S) :]
    busy = load[load.mean(axis=1) > 0]
    out["imbalance"] = (
        round(float((busy.max(axis=1) / busy.mean(axis=1)).mean()), 3) if busy.size else None
    )
    changes = [
        d
        for d in r.decisions
        if (w := d.get("workers", {})).get("changed")
        and (w.get("written") or d.get("mode") == "shadow")
    ]
    out["decisions_per_s"] = round(len(changes) / (dur + warm), 2) if r.decisions else 0.0
    out["tuner_cpu_s"] = round(r.tuner_cpu_s, 2)
    if r.agent_status:
        out.update(learner_metrics(r.agent_status.get("scores", {})))
        out.update(client_metrics(r.agent_status.get("clients")))
        out["loop_ms_p99"] = r.agent_status.get("loop_ms_p99")
        out["records_lost"] = int(r.agent_status.get("records_lost") or 0)
        out["refused"] = sum((r.agent_status.get("refused") or {}).values())
        workers = (r.agent_status.get("placed") or {}).get("workers")
        if workers:  # new connections placed by the table, of all
            placed, left = sum(workers["by_target"]), sum(workers["kernel"].values())
            if placed + left:
                out["placed_share"] = round(placed / (placed + left), 3)
    if r.fallback_share is not None:
        out["fallback_share"] = round(r.fallback_share, 3)
    if spec.get("cluster.groups") > 1:  # arms side by side: where and when each ran
        out["group"] = r.group
        out["started"] = round(r.started, 3)
    if r.failed:
        out["failed"] = r.failed
    if r.interrupted:
        out["interrupted"] = True
    return out


def write_all(
    spec: ExperimentSpec,
    results: list[ArmResult],
    out: Path,
    rate: float | None = None,
    calibration: Calibration | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Write every output file into ``out``; returns the summary. ``rate``: the requests per
    second the round ran at (its calibration's, when it had one); ``plots=False`` leaves the
    two PNG plots out (matplotlib takes seconds a round)."""
    rate = rate if rate is not None else spec.get("workload.rate")
    summary: dict[str, Any] = {
        "spec": spec.to_json(),
        "rate": round(rate, 1),
        "arms": {r.arm: arm_metrics(r, spec) for r in results},
    }
    if calibration is not None:
        summary["calibration"] = calibration.to_json()
    mean_us = ServiceTime.parse(spec.get("workload.service")).mean_us
    for arm in ("kernel", "kernel-again"):
        if arm in summary["arms"]:
            summary["arms"][arm]["overloaded"] = overloaded(summary["arms"][arm], mean_us)
    add_ratios(summary["arms"])
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _parquet(results, out / "samples.parquet")
    if plots:
        _plots(spec, results, out)
    (out / "report.md").write_text(_report(spec, summary, plots))
    return summary


def add_ratios(arms: dict[str, dict[str, Any]]) -> None:
    """Each arm's p99 over the kernel arm's and over the reactive arm's, and the variant's
    over the active arm's, within this round (a failed arm, or a failed baseline, gives no
    ratio).

    >>> arms = {"kernel": {"p99_ms": 10.0}, "reactive": {"p99_ms": 5.0}, "active": {"p99_ms": 4.0},
    ...         "variant": {"p99_ms": 2.0}}
    >>> add_ratios(arms); arms["active"], arms["variant"]["p99_vs_active"]
    ({'p99_ms': 4.0, 'p99_vs_kernel': 0.4, 'p99_vs_reactive': 0.8}, 0.5)
    """
    for base in BASES:
        ref = arms.get(base, {})
        if not ref.get("p99_ms") or ref.get("failed"):
            continue
        for arm, m in arms.items():
            if base == "active" and arm != "variant":
                continue
            if m.get("p99_ms") is not None and not m.get("failed"):
                m[f"p99_vs_{base}"] = round(m["p99_ms"] / ref["p99_ms"], 3)


def _parquet(results: list[ArmResult], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, list] = {
        k: []
        for k in ("arm", "client", "t_send_s", "latency_ms", "conn", "worker", "service_us", "ok")
    }
    for r in results:
        x = r.samples
        cols["arm"].append(np.full(x.size, r.arm))
        cols["client"].append(x["client"])
        cols["t_send_s"].append(x["t_send"])
        cols["latency_ms"].append(x["latency"] * 1e3)
        cols["conn"].append(x["conn"])
        cols["worker"].append(x["worker"])
        cols["service_us"].append(x["service_us"])
        cols["ok"].append(x["ok"].astype(bool))
    table = pa.table({k: np.concatenate(v) if v else [] for k, v in cols.items()})
    pq.write_table(table, path)


def _plots(spec: ExperimentSpec, results: list[ArmResult], out: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI

    warm = spec.get("warmup_s")
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for r in results:
        x = r.samples[(r.samples["t_send"] >= warm) & (r.samples["ok"] == 1)]
        if x.size:
            lat = np.sort(x["latency"] * 1e3)
            ax.plot(lat, np.arange(1, lat.size + 1) / lat.size, label=r.arm)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"{spec.get('name')}: latency CDF per arm ({spec.get('workload.profile')})")
    ax.axhline(0.99, color="grey", lw=0.5, ls="--")
    ax.legend()
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.92)  # tight_layout: 0.4 s
    fig.savefig(out / "latency_cdf.png", dpi=100)

    workers = spec.workers()
    fig = Figure(figsize=(8, 2.2 * len(results)))
    axes = fig.subplots(len(results), 1, sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], results, strict=False):
        load = worker_load(r.samples, workers, 0.5)
        t = np.arange(load.shape[0]) * 0.5
        for w in range(workers):
            ax.plot(t, load[:, w] if load.size else [], lw=1, label=f"worker {w}")
        for d in r.decisions:
            if d.get("workers", {}).get("changed") and d.get("workers", {}).get("written"):
                ax.axvline(d["t"] - r.started, color="black", lw=0.3, alpha=0.3)
        ax.axvspan(0, warm, color="grey", alpha=0.15)
        ax.set_ylabel(f"{r.arm}\nCPU share")
    axes[0, 0].legend(fontsize=7, ncol=workers, loc="upper right")
    axes[-1, 0].set_xlabel("time (s); grey: warm-up; thin lines: tables written")
    inch = 1 / fig.get_figheight()  # margins of fixed size, whatever the number of arms
    fig.subplots_adjust(left=0.11, right=0.98, bottom=0.55 * inch, top=1 - 0.1 * inch, hspace=0.1)
    fig.savefig(out / "worker_load.png", dpi=100)


def _servers(spec: ExperimentSpec) -> str:
    """Who serves, in words.

    >>> _servers(ExperimentSpec.from_dict({"cluster": {"backends": 4}, "server": {"workers": 1}}))
    '4 backend hosts behind an XDP-steered entry (kernel: ECMP), 1 worker each'
    """
    w, b = spec.get("server.workers"), spec.get("cluster.backends")
    if not b:
        return f"{w} workers"
    return f"{b} backend hosts behind an XDP-steered entry (kernel: ECMP), {w} worker each"


def _calibrated(summary: dict[str, Any]) -> str:
    c = summary.get("calibration")
    if not c:
        return ""
    floor = "" if c["saturated"] else " (at least: the server kept up with all it was offered)"
    text = f"{c['utilization']:.0%} of the {c['capacity']:g} req/s measured{floor}"
    checks = c.get("checks") or []
    if len(checks) > 1 or not c.get("sustained", True):
        tried = ", ".join(_check(x) for x in checks)
        if c.get("sustained", True):
            text += f"; lowered until the kernel's placement kept up with the profile ({tried})"
        else:
            text += f"; the kernel's placement kept up with the profile at none of {tried}"
    if c.get("of_limit", 1.0) < 1.0:
        text += f"; run at {c['of_limit']:.0%} of the {c['limit']:g} req/s kept up with"
    return f" ({text})"


def _check(x: dict[str, Any]) -> str:
    """One calibration check in words.

    >>> _check({"rate": 665.0, "answered": 1.0, "p50_ms": 24.66, "growth_ms": -4.8})
    '665 req/s: median 24.7 ms'
    """
    if x.get("p50_ms") is None:
        return f"{x['rate']:g} req/s: unanswered"
    return f"{x['rate']:g} req/s: median {x['p50_ms']:.3g} ms"


def _side_by_side(summary: dict[str, Any]) -> str:
    arms = summary["arms"]
    return side_by_side({arm: str(m["group"]) for arm, m in arms.items() if "group" in m})


_PLOTS = """- Plots: `latency_cdf.png` (one curve per arm; further left is better),
  `worker_load.png` (CPU share of each worker over time, tables written marked).
"""


def _report(spec: ExperimentSpec, summary: dict[str, Any], plots: bool = True) -> str:
    w = spec.to_json()["workload"]
    variant = "".join(f"- {x}\n" for x in variant_line(summary))
    return f"""# Experiment {spec.get("name")}

{spec.get("description")}

Profile `{w["profile"]}`, {summary["rate"]:g} requests/s{_calibrated(summary)} from
{spec.get("cluster.clients")} clients over
{w["connections"]} connections each (mean lifetime {w["lifetime_s"]:g} s), service time
`{w["service"]}`, {_servers(spec)};
{spec.get("duration_s"):g} s measured per arm after {spec.get("warmup_s"):g} s of warm-up;
seed {spec.get("seed")}.{_side_by_side(summary)}

{table(summary)}
{chr(10).join(["", *notes(summary)]) if notes(summary) else ""}

{learning_table(summary)}

- `p99/kernel` below 1 means the arm's p99 latency is lower than the kernel's own placement;
  `p99/reactive`, lower than the reactive baseline's. `kernel-again` runs the kernel's
  placement a second time: how far its ratio is from 1 is the noise of this machine.
{variant}- `imbalance`: busiest worker / mean worker, per second, averaged (1.0 is even).
- Learning (agent arms): `MAE/last value`, the model's mean absolute error over the last
  value's (below 1: the model predicts better); `hot precision` / `hot recall`, of its calls
  that a worker's next window passes the hotspot threshold; `horizon ...`, the same for the
  mean load over the horizon and a hotspot anywhere in it. Prequential: every prediction is
  scored before its outcome is learned from.
{_PLOTS if plots else ""}- Raw per-request samples: `samples.parquet`; the agent's decisions:
  `<arm>/decisions.jsonl`.
"""
