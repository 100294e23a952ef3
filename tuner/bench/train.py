"""``tuner bench train``: the whole of ``tuner train`` timed on a synthetic trace."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from tuner.offline.train import synthetic_trace, train


def bench(windows: int, entities: int = 4, max_iter: int = 200) -> dict[str, Any]:
    """``tuner bench train``: time :func:`train` on a synthetic trace of ``windows`` windows."""
    with tempfile.TemporaryDirectory(prefix="tuner-bench-train-") as d:
        t0 = time.monotonic()
        trace = synthetic_trace(os.path.join(d, "trace.parquet"), windows, entities)
        gen_s = time.monotonic() - t0
        meta = train([trace], os.path.join(d, "model"), max_iter=max_iter)
    m = meta["metrics"]
    return {
        "windows": windows,
        "entities": entities,
        "rows": windows * entities,
        "train_s": m["train_s"],
        "fit_s": m["fit_s"],
        "read_s": m["read_s"],
        "generate_s": round(gen_s, 3),
        "holdout_model_mae": m.get("holdout_model_mae"),
        "holdout_baseline_mae": m.get("holdout_baseline_mae"),
    }
