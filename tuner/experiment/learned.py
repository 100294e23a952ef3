"""An agent arm's learning figures in an experiment's summary, from its final status: how
the load model did against the last value, and how the client cost model (policy.clients)
did against one cost for every client.
"""

from __future__ import annotations

from typing import Any


def learner_metrics(sc: dict[str, Any]) -> dict[str, Any]:
    """An agent arm's learning figures from its final status' ``scores``: errors of the
    model and the last value and their ratio, and hotspot precision and recall, for the next
    window and over the horizon.

    >>> m = learner_metrics({"model_mae": 0.08, "baseline_mae": 0.1, "model_precision": 0.9,
    ...                      "model_recall": 0.7})
    >>> m["mae_vs_baseline"], m["hotspot_precision"], "horizon_mae_vs_baseline" in m
    (0.8, 0.9, False)
    """
    out: dict[str, Any] = {}
    for prefix in ("", "horizon_"):
        if f"{prefix}model_mae" not in sc:
            continue
        model, base = sc[f"{prefix}model_mae"], sc.get(f"{prefix}baseline_mae")
        out[f"{prefix}model_mae"], out[f"{prefix}baseline_mae"] = model, base
        out[f"{prefix}mae_vs_baseline"] = round(model / base, 4) if base else None
        for who, key in (("model", "hotspot"), ("baseline", "baseline_hotspot")):
            out[f"{prefix}{key}_precision"] = sc.get(f"{prefix}{who}_precision")
            out[f"{prefix}{key}_recall"] = sc.get(f"{prefix}{who}_recall")
    return out


def client_metrics(c: dict[str, Any] | None) -> dict[str, Any]:
    """An agent arm's client cost model figures from its final status (policy.clients):
    its error accounting for the workers' loads, and that of one cost for every client.

    >>> client_metrics({"mae": 0.02, "baseline_mae": 0.05, "heavy": 3, "followed": 32})
    {'client_mae': 0.02, 'client_baseline_mae': 0.05, 'client_mae_vs_baseline': 0.4, \
'heavy_clients': 3}
    >>> client_metrics(None)
    {}
    """
    if not c or c.get("mae") is None:
        return {}
    base = c.get("baseline_mae")
    return {
        "client_mae": c["mae"],
        "client_baseline_mae": base,
        "client_mae_vs_baseline": round(c["mae"] / base, 4) if base else None,
        "heavy_clients": c.get("heavy"),
    }
