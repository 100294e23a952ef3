"""The arms' figures as Markdown tables and notes, for the terminal and report.md.

>>> print(table({"arms": {"kernel": {"requests": 10, "p99_ms": 2.0}}}).splitlines()[0][:35])
| arm | requests | errors | req/s |
"""

from __future__ import annotations

from typing import Any

from tuner.experiment.stats import ci_text
from tuner.schema import toml_value

COLUMNS = (
    ("requests", "requests"),
    ("errors", "errors"),
    ("throughput_rps", "req/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("p99_9_ms", "p99.9 ms"),
    ("p99_vs_kernel", "p99/kernel"),
    ("p99_vs_reactive", "p99/reactive"),
    ("p99_vs_active", "p99/active"),
    ("imbalance", "imbalance"),
    ("decisions_per_s", "dec/s"),
    ("tuner_cpu_s", "tuner cpu s"),
)


def table(summary: dict[str, Any]) -> str:
    """The arms side by side, as a Markdown table (also fine in a terminal).

    >>> print(table({"arms": {"kernel": {"requests": 10, "p99_ms": 2.0}}}).splitlines()[2][:23])
    | kernel | 10 | - | - |
    """
    arms = summary["arms"]
    # a ratio's column only where some arm has it (p99/active: the variant's)
    columns = [(key, label) for key, label in COLUMNS
               if not key.startswith("p99_vs") or any(key in m for m in arms.values())]  # fmt: skip
    head = "| arm | " + " | ".join(label for _, label in columns) + " |"
    rows = [head, "|" + "---|" * (len(columns) + 1)]
    for arm, m in arms.items():
        cells = [
            ci_text(m.get(key), m.get(f"{key}_ci"))
            if key.startswith("p99_vs")
            else _fmt(m.get(key))
            for key, _ in columns
        ]
        rows.append(f"| {arm}{_mark(m)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


LEARNING = (
    ("mae_vs_baseline", "MAE/last value"),
    ("hotspot_precision", "hot precision"),
    ("hotspot_recall", "hot recall"),
    ("horizon_mae_vs_baseline", "horizon MAE/last"),
    ("horizon_hotspot_precision", "horizon precision"),
    ("horizon_hotspot_recall", "horizon recall"),
)


def learning_table(summary: dict[str, Any]) -> str:
    """The agent arms' learning figures (prequential, since each agent started): the model's
    error as a share of the last value's (below 1: better), and precision and recall of its
    hotspot calls, next window and over the horizon. Empty when no arm has them.

    >>> print(learning_table({"arms": {"active": {"mae_vs_baseline": 0.8,
    ...       "mae_vs_baseline_ci": [0.7, 0.9], "hotspot_precision": 0.95}}}).splitlines()[2])
    | active | 0.8 [0.7, 0.9] | 0.95 | - | - | - | - |
    """
    arms = {a: m for a, m in summary["arms"].items() if m.get("mae_vs_baseline") is not None}
    if not arms:
        return ""
    rows = ["| arm | " + " | ".join(label for _, label in LEARNING) + " |",
            "|" + "---|" * (len(LEARNING) + 1)]  # fmt: skip
    for arm, m in arms.items():
        cells = [ci_text(m.get(k), m.get(f"{k}_ci")) if k.endswith("vs_baseline")
                 else _fmt(m.get(k)) for k, _ in LEARNING]  # fmt: skip
        rows.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _mark(m: dict[str, Any]) -> str:
    """What the table says beside an arm that is not a full result.

    >>> _mark({"failed": "x"}), _mark({"interrupted": True}), _mark({})
    (' FAILED', ' (interrupted)', '')
    """
    return " FAILED" if m.get("failed") else " (interrupted)" if m.get("interrupted") else ""


def notes(summary: dict[str, Any]) -> list[str]:
    """One line per failed or interrupted arm, for the terminal and report.md.

    >>> notes({"arms": {"active": {"failed": "the agent exited"}, "kernel": {}}})
    ['- **active FAILED**: the agent exited; its figures are not a result']
    >>> print(*notes({"arms": {"shadow": {"placed_share": 0.0}, "active": {"placed_share": 0.3}}}))
    - **active's table placed 30% of new connections**: the kernel placed the rest (no \
lease in force: warming up, falling back); its figures are mostly the kernel's placement
    >>> print(*notes({"arms": {"active": {"refused": 40, "records_lost": 0}}}))
    - **active's agent saw part of the load**: its probes refused 40 tasks or sockets (all \
slots taken; agent.max_entities) and lost 0 records
    """
    out = []
    for arm, m in summary["arms"].items():
        if m.get("failed"):
            out.append(f"- **{arm} FAILED**: {m['failed']}; its figures are not a result")
        elif m.get("interrupted"):
            out.append(f"- **{arm} interrupted** (Ctrl-C): rates are over the time it ran")
        if m.get("overloaded") is True or (m.get("overloaded_rounds") or 0) > 0:
            rounds = f" in {m['overloaded_rounds']} round(s)" if "overloaded_rounds" in m else ""
            out.append(f"- **{arm} ran overloaded**{rounds}: the server could not keep up; "
                       "ratios against it are not comparable (medians over rounds leave "
                       "them out)")  # fmt: skip
        share = m.get("placed_share")
        if arm != "shadow" and share is not None and share < 0.5:
            out.append(f"- **{arm}'s table placed {share:.0%} of new connections**: the kernel "
                       "placed the rest (no lease in force: warming up, falling back); its "
                       "figures are mostly the kernel's placement")  # fmt: skip
        if m.get("refused") or m.get("records_lost"):
            refused, lost = m.get("refused", 0), m.get("records_lost", 0)
            out.append(f"- **{arm}'s agent saw part of the load**: its probes refused {refused} "
                       "tasks or sockets (all slots taken; agent.max_entities) and lost "
                       f"{lost} records")  # fmt: skip
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def variant_line(summary: dict[str, Any]) -> list[str]:
    """What the variant arm changes, for the reports ([] without one).

    >>> variant_line({"spec": {"variant": {"policy.horizon": True}}})
    ['`variant` is the active arm with `policy.horizon = true`; its `p99/active` below 1: a \
lower p99 than the active arm in the same rounds.']
    """
    changes = summary.get("spec", {}).get("variant")
    if not changes:
        return []
    what = ", ".join(f"`{k} = {toml_value(v)}`" for k, v in changes.items())
    return [f"`variant` is the active arm with {what}; its `p99/active` below 1: a lower p99 "
            "than the active arm in the same rounds."]  # fmt: skip
