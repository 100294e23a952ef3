"""Repeated rounds of one experiment, the arms' order rotated each round, figures as medians.

One round of an experiment is noisy on a shared machine: the kernel arm's p99 has been seen to
move from 88 ms to 377 ms between runs of the same spec, when stalls hit every CPU at once.
With ``repeats = N`` (spec key, or ``--repeats``) the runner runs N rounds into
``OUT/round-<i>/`` (each a complete single-round output), every arm taking each place in the
order in turn, so that a drift in machine load hits all arms alike. The top-level
``summary.json`` then gives, per arm, the median over rounds of each figure (``requests`` and
``errors``: totals) and ``p99_vs_kernel`` and ``p99_vs_reactive`` as the median of the
per-round ratios, each ratio taken within one round, with the per-round ratios and a 95 %
bootstrap interval over rounds beside it (:mod:`tuner.experiment.stats`).

>>> rotated(["kernel", "reactive", "active"], 1)
['reactive', 'active', 'kernel']
>>> s = combine([{"arms": {"kernel": {"requests": 5, "p99_ms": 10.0, "p99_vs_kernel": 1.0},
...                        "active": {"requests": 5, "p99_ms": 4.0, "p99_vs_kernel": 0.4}}},
...              {"arms": {"kernel": {"requests": 6, "p99_ms": 20.0, "p99_vs_kernel": 1.0},
...                        "active": {"requests": 6, "p99_ms": 12.0, "p99_vs_kernel": 0.6}}}],
...             {"name": "x"})
>>> s["arms"]["active"]["requests"], s["arms"]["active"]["p99_ms"]
(11, 8.0)
>>> s["arms"]["active"]["p99_vs_kernel"], s["arms"]["active"]["p99_vs_kernel_rounds"]
(0.5, [0.4, 0.6])
>>> s["arms"]["kernel"]["p99_ms_rounds"]   # which regime each round ran in
[10.0, 20.0]

A round whose kernel arm ran overloaded gives no ``p99_vs_kernel``: the kernel's p99 then
grows with the arm's length, and the ratio with it.

>>> rounds = [{"arms": {"kernel": {"p99_vs_kernel": 1.0, "overloaded": k},
...                     "active": {"p99_vs_kernel": x, "overloaded": False}}}
...           for k, x in ((False, 0.5), (True, 0.1), (False, 0.7))]
>>> a = combine(rounds, {})["arms"]["active"]
>>> a["p99_vs_kernel_rounds"], a["p99_vs_kernel_left_out"], a["overloaded_rounds"]
([0.5, 0.7], 1, 0)
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

from tuner.experiment.keys import BASES
from tuner.experiment.spec import ExperimentSpec
from tuner.experiment.stats import median_ci
from tuner.experiment.tables import learning_table, notes, table, variant_line

#: figures summed over rounds rather than taken as a median
TOTALS = ("requests", "errors", "records_lost", "refused")
#: per-round ratios given as a median with its 95 % interval over rounds
RATIOS = (
    *(f"p99_vs_{b}" for b in BASES),
    "mae_vs_baseline",
    "horizon_mae_vs_baseline",
    "client_mae_vs_baseline",
)

#: the arm a ratio is taken against: a round in which it ran overloaded gives no ratio
BASELINES = {f"p99_vs_{b}": b for b in BASES}


def rotated(arms: list[str], r: int) -> list[str]:
    """The arms in round ``r``'s order: the list turned left by ``r`` places."""
    k = r % len(arms) if arms else 0
    return arms[k:] + arms[:k]


def combine(rounds: list[dict[str, Any]], spec_json: dict[str, Any]) -> dict[str, Any]:
    """The summary of several rounds' summaries, as :func:`~tuner.experiment.report.write_all`
    returns them (see the module docstring). Each round's ``p99_vs_kernel`` is already its own
    ratio, so the median taken here is the median of the per-round ratios."""
    arms: dict[str, dict[str, Any]] = {}
    names = list(rounds[0]["arms"]) if rounds else []
    for arm in names:
        per = [r["arms"][arm] for r in rounds if arm in r["arms"]]
        m: dict[str, Any] = {}
        for key in dict.fromkeys(k for p in per for k in p):
            vals = [p.get(key) for p in per]
            nums = [v for v in vals if isinstance(v, int | float) and not isinstance(v, bool)]
            if key == "p99_ms":  # the regime each round ran in, beside the ratios
                m[f"{key}_rounds"] = vals
            if key in ("group", "started"):  # arms side by side: where and when, per round
                m[f"{key}_rounds"] = vals
            elif key in TOTALS:
                m[key] = sum(nums)
            elif key == "interrupted":
                m[key] = any(vals)
            elif key == "overloaded":
                m["overloaded_rounds"] = sum(bool(v) for v in vals)
            elif key == "failed":
                bad = [v for v in vals if v]
                m[key] = f"{len(bad)} of {len(per)} rounds failed, first: {bad[0]}"
            elif nums:
                m[key] = round(statistics.median(nums), 3)
            else:
                m[key] = None
        for key in RATIOS:
            # failed rounds have no ratio, and a round whose baseline arm ran overloaded has
            # none that means anything: the median is over the others
            base = BASELINES.get(key)
            kept = [r for r in rounds if arm in r["arms"]
                    and not r["arms"].get(base, {}).get("overloaded")]  # fmt: skip
            ratios = [r["arms"][arm][key] for r in kept if r["arms"][arm].get(key) is not None]
            if ratios:
                m[key], m[f"{key}_ci"] = median_ci(ratios)
                m[f"{key}_rounds"] = ratios
            had = any(key in r["arms"][arm] for r in rounds if arm in r["arms"])
            if base and had and len(kept) < len(per):
                m[f"{key}_left_out"] = len(per) - len(kept)
        m["rounds"] = len(per)
        arms[arm] = m
    rates = [r["rate"] for r in rounds if "rate" in r]
    out = {"spec": spec_json, "repeats": len(rounds), "arms": arms}
    if rates:
        out["rate_rounds"] = rates
    return out


def side_by_side(groups: dict[str, str]) -> str:
    """What a report says of arms that ran at the same time, each on its group of hosts
    (``groups``: arm -> its group, or groups round by round); "" when they did not.

    >>> side_by_side({"kernel": "0", "active": "1"})[-38:]
    'each on its group: kernel 0; active 1.'
    """
    if not groups:
        return ""
    each = "; ".join(f"{arm} {g}" for arm, g in groups.items())
    return f" The arms ran side by side under the same load, each on its group: {each}."


def run_rounds(
    spec: ExperimentSpec, out: Path, repeats: int, progress: Any = None, plots: bool = True
) -> tuple:
    """Run ``repeats`` rounds into ``out/round-<i>``; write and return the combined summary
    (``plots``: each round's PNG plots too).

    Returns ``(summary, interrupted)``. An interrupted round ends the run; the rounds done
    by then (the interrupted one included) make up the summary.
    """
    from tuner.experiment.report import write_all
    from tuner.experiment.runner import Runner

    out.mkdir(parents=True, exist_ok=True)
    summaries, interrupted = [], False
    arms = list(spec.arms)
    costs_us = None  # nginx's file costs, measured by the first round's runner
    for r in range(repeats):
        this_round = dataclasses.replace(spec, arms=rotated(arms, r))

        def note(arm: str, frac: float, text: str, tag: str = f"round {r + 1}/{repeats}") -> None:
            if progress:
                progress(arm, frac, f"{tag}: {text}")

        runner = Runner(this_round, out / f"round-{r + 1}", note, costs_us)
        costs_us = runner.costs_us
        results = runner.run()
        results.sort(key=lambda x: arms.index(x.arm))
        summaries.append(
            write_all(spec, results, out / f"round-{r + 1}", runner.rate, runner.calibration, plots)
        )
        if any(x.interrupted for x in results):
            interrupted = True
            break
    summary = combine(summaries, spec.to_json())
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(report(spec, summary))
    return summary, interrupted


def report(spec: ExperimentSpec, summary: dict[str, Any]) -> str:
    """``report.md`` of a repeated run: the median table and each round's p99 ratio."""
    n = summary["repeats"]
    lines = [
        f"# Experiment {spec.get('name')}, {n} rounds",
        "",
        f"{spec.get('description')}",
        "",
        f"Profile `{spec.get('workload.profile')}`; the arms' order turned one place each round.",
        "Each figure is the median over rounds (requests and errors: totals); `p99/kernel`,",
        "`p99/reactive` and `p99/active` are the medians of the per-round ratios, each taken",
        "within one round, with a 95 % bootstrap interval over rounds in brackets (percentile",
        "method, 10 000 resamples). `kernel-again` is the kernel's placement a second time:",
        "its interval around 1 is what this machine's noise alone gives.",
        *variant_line(summary),
        "",
        table(summary),
        *notes(summary),
        "",
        learning_table(summary),
        "",
    ]
    arms = summary["arms"]
    bases = [b for b in BASES if any(f"p99_vs_{b}_rounds" in m for m in arms.values())]
    lines += ["| arm | " + " | ".join(f"p99/{b} per round" for b in bases) + " |",
              "|---|" + "---|" * len(bases)]  # fmt: skip
    for arm, m in arms.items():
        per = [", ".join(f"{v:.3f}" for v in m.get(f"p99_vs_{b}_rounds", [])) or "-"
               for b in bases]  # fmt: skip
        lines.append(f"| {arm} | " + " | ".join(per) + " |")
    for arm, m in summary["arms"].items():
        for b in BASES:
            n = m.get(f"p99_vs_{b}_left_out")
            if n and arm != b:
                lines.append(f"\n{arm}: {n} round(s) left out of p99/{b}, the {b} arm "
                             "overloaded in them.")  # fmt: skip
    rates = summary.get("rate_rounds")
    if rates:
        lines += ["", "Each round's rate, req/s: " + ", ".join(f"{r:.0f}" for r in rates) + "."]
    for arm, m in summary["arms"].items():
        p99 = m.get("p99_ms_rounds")
        if p99 and arm in ("kernel", "kernel-again"):
            text = ", ".join("-" if v is None else f"{v:.0f}" for v in p99)
            lines.append(f"The {arm} arm's p99 each round, ms: {text}.")
    sides = {arm: ", ".join(map(str, m["group_rounds"])) for arm, m in summary["arms"].items()
             if "group_rounds" in m}  # fmt: skip
    if sides:
        lines += ["", side_by_side(sides).strip() + " (round by round)"]
    lines += ["", "Each round's own outputs (plots, samples, decisions): `round-<i>/`.", ""]
    return "\n".join(lines)
