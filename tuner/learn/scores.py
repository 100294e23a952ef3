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

from dataclasses import dataclass

import numpy as np

RECENT = 200  # predictions the recent error is taken over


class Scores:
    """Prequential error and hotspot precision / recall, model against baseline."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.n = 0
        self.err = {"model": 0.0, "baseline": 0.0}
        self._ring = np.zeros((2, RECENT))  # the last RECENT errors, model and baseline
        self._filled = 0
        self.hits = {k: [0, 0, 0] for k in ("model", "baseline")}  # tp fp fn

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
        n = len(actual)
        e = np.empty((2, n))  # the absolute errors of the model and of the baseline
        np.subtract(model, actual, out=e[0])
        np.subtract(base, actual, out=e[1])
        np.abs(e, out=e)
        sums = np.add.reduce(e, axis=1).tolist()
        self.err["model"] += sums[0]
        self.err["baseline"] += sums[1]
        k = min(n, RECENT)
        pos = (self.n + np.arange(n - k, n)) % RECENT
        self._ring[:, pos] = e[:, n - k :]
        self.n += n
        self._filled = min(RECENT, self._filled + n)
        said = np.empty((5, n), dtype=bool)  # called hot by each, right by each, and was hot
        np.greater(p_hot, 0.5, out=said[0])
        np.greater(base, self.threshold, out=said[1])
        np.logical_and(said[:2], hot, out=said[2:4])
        said[4] = hot
        called_m, called_b, tp_m, tp_b, was = np.count_nonzero(said, axis=1).tolist()
        for h, tp, called in ((self.hits["model"], tp_m, called_m),
                              (self.hits["baseline"], tp_b, called_b)):  # fmt: skip
            h[0] += tp
            h[1] += called - tp
            h[2] += was - tp

    def recent_mae(self) -> tuple[float, float]:
        """(model, baseline) mean absolute error over the last :data:`RECENT` predictions."""
        if not self._filled:
            return 0.0, 0.0
        m, b = self._ring[:, : self._filled].sum(axis=1) / self._filled
        return float(m), float(b)

    def skill(self, name: str) -> Skill:
        """How the ``model`` or the ``baseline`` did: mean absolute error, and precision and
        recall of its hotspot calls (None while it called none, or none happened)."""
        tp, fp, fn = self.hits[name]
        return Skill(
            round(self.err[name] / max(1, self.n), 6),
            round(tp / (tp + fp), 4) if tp + fp else None,
            round(tp / (tp + fn), 4) if tp + fn else None,
        )

    def summary(self, prefix: str) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name in ("model", "baseline"):
            sk = self.skill(name)
            out.update({f"{prefix}{name}_mae": sk.mae, f"{prefix}{name}_precision": sk.precision,
                        f"{prefix}{name}_recall": sk.recall})  # fmt: skip
        return out


@dataclass(frozen=True)
class Skill:
    """One predictor's record: its mean absolute error, and precision and recall of its
    hotspot calls (a hotspot: load over the threshold; None when undefined)."""

    mae: float
    precision: float | None
    recall: float | None


@dataclass(frozen=True)
class SkillSummary:
    """The learner's record since the start, next window and horizon, model and baseline."""

    windows: int
    horizon: int  # windows the horizon covers (1: none beyond the next)
    model: Skill
    baseline: Skill
    horizon_model: Skill | None = None
    horizon_baseline: Skill | None = None


class HorizonQueue:
    """Predictions waiting for their horizon to pass, in a ring of ``horizon`` slots: the
    slot of the window they were made in holds, per entity row, what was predicted from what
    (standardized features, baseline, the two horizon predictions) and the sum, peak and
    count of the loads seen since. Every window's loads go into every slot at once (arrays,
    not a loop per slot or entity); the slot made ``horizon`` windows ago is then complete.

    >>> q = HorizonQueue(horizon=2, width=3)
    >>> q.push(np.array([0]), np.array([0.1])) is None
    True
    >>> q.add(np.array([0]), np.zeros((1, 3)), np.array([0.1]), np.array([0.5]),
    ...       np.array([0.2]), np.array([0.6]))
    >>> q.push(np.array([0]), np.array([0.4])) is None
    True
    >>> _, base, far, p_far, chosen, mean, peak = q.push(np.array([0]), np.array([0.8]))
    >>> far.tolist(), [round(float(m), 2) for m in mean], peak.tolist()
    ([0.5], [0.6], [0.8])
    """

    def __init__(self, horizon: int, width: int) -> None:
        self.horizon, self.width = horizon, width
        w = width
        # the columns of a slot's row: what was predicted from what, then the sum, peak and
        # count of the loads seen since (one array, so that a slot is written and read whole)
        self._base, self._far, self._p_far, self._chosen = w, w + 1, w + 2, w + 3
        self._total, self._peak, self._seen = w + 4, w + 5, w + 6
        self.t = 0  # windows pushed
        self.data = np.zeros((horizon, 0, w + 7))
        self.valid = np.zeros((horizon, 0), dtype=bool)
        self._alloc(16)

    def _alloc(self, cap: int) -> None:
        h, old = self.horizon, self.valid.shape[1]
        data = np.zeros((h, cap, self.width + 7))
        valid = np.zeros((h, cap), dtype=bool)
        data[:, :old], valid[:, :old] = self.data, self.valid
        self.data, self.valid = data, valid

    def _fit(self, rows: np.ndarray | slice) -> None:
        if isinstance(rows, slice):
            need = rows.stop
        else:
            need = int(rows.max()) + 1 if len(rows) else 0
        if need > self.valid.shape[1]:
            self._alloc(max(need, 2 * self.valid.shape[1]))

    def add(self, rows: np.ndarray | slice, Z: np.ndarray, base: np.ndarray, far: np.ndarray,
            p_far: np.ndarray, chosen: np.ndarray) -> None:  # fmt: skip
        """This window's horizon predictions for ``rows`` (``far``: the model's raw output;
        ``chosen``: the load predicted, the model's or the baseline's)."""
        self._fit(rows)
        k = self.t % self.horizon
        self.valid[k] = False
        self.valid[k, rows] = True
        B = np.empty((len(Z), self.width + 7))
        B[:, : self.width] = Z
        B[:, self._base], B[:, self._far], B[:, self._p_far] = base, far, p_far
        B[:, self._chosen], B[:, self._total], B[:, self._seen] = chosen, 0.0, 0.0
        B[:, self._peak] = -np.inf
        self.data[k, rows] = B

    def push(self, rows: np.ndarray | slice, y: np.ndarray) -> tuple[np.ndarray, ...] | None:
        """One more window's loads (``rows``: an array of rows, or a slice of them). Returns
        the slot whose horizon is now complete, as (Z, base, far, p_far, chosen, mean load,
        peak load) of its rows seen in every window of it, or None."""
        self._fit(rows)
        acc = slice(self._total, self._seen + 1)
        A = self.data[:, rows, acc]  # every slot's sums: a view for a slice, else a copy
        A[:, :, 0] += y
        np.maximum(A[:, :, 1], y, out=A[:, :, 1])
        A[:, :, 2] += 1.0
        if not isinstance(rows, slice):
            self.data[:, rows, acc] = A
        self.t += 1
        k = self.t % self.horizon  # the slot made `horizon` windows ago
        full = self.valid[k] & (self.data[k, :, self._seen] == self.horizon)
        self.valid[k] = False
        if not full.any():
            return None
        S, w = self.data[k, full], self.width
        return (S[:, :w], S[:, self._base], S[:, self._far], S[:, self._p_far],
                S[:, self._chosen], S[:, self._total] / self.horizon,
                S[:, self._peak])  # fmt: skip

    def forget(self, rows: set[int]) -> None:
        """Entities forgotten: their rows may go to new entities, so drop them here."""
        idx = np.array(sorted(r for r in rows if r < self.valid.shape[1]), dtype=np.int64)
        self.valid[:, idx] = False
