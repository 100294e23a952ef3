"""Scoring predictions as outcomes arrive: errors and hotspot hits of a model and of the
last-value baseline (:class:`Scores`), and the horizon's outcomes, which arrive only after
the horizon has passed (:class:`HorizonQueue`).

>>> s = Scores(threshold=0.8)
>>> s.add(model=np.array([0.9, 0.2]), p_hot=np.array([0.7, 0.1]), base=np.array([0.5, 0.3]),
...       actual=np.array([0.95, 0.25]))
>>> s.summary("")["model_mae"], s.summary("")["model_precision"], s.summary("")["baseline_recall"]
(0.05, 1.0, 0.0)
"""

from __future__ import annotations

from collections import deque

import numpy as np

RECENT = 200  # predictions the recent error is taken over


class Scores:
    """Prequential error and hotspot precision / recall, model against baseline."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.n = 0
        self.err = {"model": 0.0, "baseline": 0.0}
        self.recent = {"model": deque(maxlen=RECENT), "baseline": deque(maxlen=RECENT)}
        self.hits = {k: np.zeros(3, dtype=np.int64) for k in ("model", "baseline")}  # tp fp fn

    def add(
        self,
        model: np.ndarray,
        p_hot: np.ndarray,
        base: np.ndarray,
        actual: np.ndarray,
        hot: np.ndarray | None = None,
    ) -> None:
        """One window's predictions and what happened (``hot``: whether each was a hotspot;
        by default, ``actual`` over the threshold)."""
        hot = actual > self.threshold if hot is None else hot
        self.n += len(actual)
        for name, pred, said in (
            ("model", model, p_hot > 0.5),
            ("baseline", base, base > self.threshold),
        ):
            e = np.abs(pred - actual)
            self.err[name] += float(e.sum())
            self.recent[name].extend(e.tolist())
            self.hits[name] += [int((said & hot).sum()), int((said & ~hot).sum()),
                                int((hot & ~said).sum())]  # fmt: skip

    def recent_mae(self) -> tuple[float, float]:
        """(model, baseline) mean absolute error over the last :data:`RECENT` predictions."""

        def mean(d: deque) -> float:
            return sum(d) / len(d) if d else 0.0

        return mean(self.recent["model"]), mean(self.recent["baseline"])

    def summary(self, prefix: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in ("model", "baseline"):
            tp, fp, fn = (int(v) for v in self.hits[name])
            out[f"{prefix}{name}_mae"] = round(self.err[name] / max(1, self.n), 6)
            out[f"{prefix}{name}_precision"] = round(tp / (tp + fp), 4) if tp + fp else 0.0
            out[f"{prefix}{name}_recall"] = round(tp / (tp + fn), 4) if tp + fn else 0.0
        return out


class HorizonQueue:
    """Predictions waiting for their horizon to pass: each window's rows, features and
    horizon predictions, with the loads of the windows since summed and their peak kept.

    >>> q = HorizonQueue(horizon=2)
    >>> q.add(np.array([0]), np.zeros((1, 3)), np.array([0.5]), np.array([0.2]))
    >>> q.push(np.array([0]), np.array([0.4]))
    []
    >>> [(m.tolist(), p.tolist()) for *_, m, p in q.push(np.array([0]), np.array([0.8]))]
    [([0.6000000000000001], [0.8])]
    """

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        self.entries: deque[list] = deque()

    def add(self, rows: np.ndarray, X: np.ndarray, far: np.ndarray, p_far: np.ndarray) -> None:
        n = len(rows)
        self.entries.append(
            [rows, X, far, p_far, np.zeros(n), np.full(n, -np.inf), np.zeros(n, dtype=int), 0]
        )

    def push(self, rows: np.ndarray, y: np.ndarray) -> list[tuple]:
        """One more window's loads; returns the entries whose horizon is complete, each as
        (X, far, p_far, mean load, peak load) of the rows seen in every window of it."""
        done = []
        order = np.argsort(rows)
        sorted_rows = rows[order]
        for entry in self.entries:
            e_rows, total, peak, seen = entry[0], entry[4], entry[5], entry[6]
            pos = np.searchsorted(sorted_rows, e_rows)
            pos = np.minimum(pos, len(sorted_rows) - 1)
            here = sorted_rows[pos] == e_rows
            load = np.where(here, y[order[pos]], 0.0)
            total += load
            np.maximum(peak, np.where(here, load, -np.inf), out=peak)
            seen += here
            entry[7] += 1
        while self.entries and self.entries[0][7] >= self.horizon:
            e_rows, X, far, p_far, total, peak, seen, _ = self.entries.popleft()
            full = seen == self.horizon
            if full.any():
                done.append((X[full], far[full], p_far[full], total[full] / self.horizon,
                             peak[full]))  # fmt: skip
        return done

    def forget(self, rows: set[int]) -> None:
        """Entities forgotten: their rows may go to new entities, so drop them here."""
        for entry in self.entries:
            keep = np.array([int(r) not in rows for r in entry[0]], dtype=bool)
            for i in range(7):
                entry[i] = entry[i][keep]
