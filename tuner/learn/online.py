"""The online hotspot learner: learns from each closed window, predicts the next ones.

Every window, for all entities of a channel at once (a worker, a CPU, a socket, a backend;
arrays, not a loop per entity), :meth:`Learner.step`

1. scores the predictions made one window ago against the loads now observed (prequential:
   each prediction is scored before its outcome is learned from), for the model and for the
   last-value baseline, and learns from those outcomes (one model for all entities, so a new
   worker is predicted well from its first window);
2. does the same for the **horizon**: the mean load over the next ``horizon`` windows (the
   life of a connection placed now) and whether the load passes the threshold in any of them,
   scored and learned once those windows have passed;
3. predicts the next window's load, the horizon's mean load, and the probabilities that the
   next window, or any window of the horizon, is hot (load above ``threshold``).

The load it reports is the model's while the model's recent error is no worse than the last
value's, and the last value otherwise (two experts, chosen online on their error over the
last :data:`RECENT` windows): the prediction an agent acts on cannot drift far from the
baseline's quality. ``scores()`` gives both, and hotspot precision and recall.

>>> lr = Learner(model="linear", threshold=0.8)
>>> for i in range(300):
...     hot = i % 4 == 0                       # every 4th window is hot
...     preds = lr.step({"w0": 0.9 if hot else 0.3, "w1": 0.3})
>>> s = lr.scores()
>>> s["windows"], s["model_mae"] < s["baseline_mae"]
(299, True)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuner.learn.features import EXTRA, FEATURES
from tuner.learn.history import BatchHistory
from tuner.learn.linear import OnlineLinear, OnlineLogistic
from tuner.learn.models import LoadModel, Residual, make_classifier, make_model
from tuner.learn.scores import HorizonQueue, Scores

RECENT = 200  # windows of recent error the experts are chosen on


@dataclass(frozen=True)
class Prediction:
    """What the learner expects of one entity."""

    entity: str
    load: float  # predicted load of the next window, CPUs (the chosen expert's)
    baseline: float  # the last-value prediction
    p_hot: float  # probability that the next window's load > threshold
    horizon_load: float | None = None  # predicted mean load over the horizon
    p_hot_horizon: float | None = None  # probability that a window of the horizon is hot


class Learner:
    """One load model and one hotspot classifier over all entities, plus the baseline, for
    the next window and for the horizon.

    Parameters
    ----------
    model : {"linear", "tree", "last"} or a model object
        The load model (see :mod:`tuner.learn.models`), or any
        :class:`~tuner.learn.models.LoadModel` (:class:`tuner.learn.boost.OfflineModel`).
    threshold : float
        Load above which an entity is a hotspot, as a fraction of a CPU.
    horizon : int
        Windows the horizon predictions cover (1: none beyond the next window).
    """

    def __init__(self, model: str | Any = "linear", threshold: float = 0.8, horizon: int = 1):
        self.model = model if isinstance(model, str) else type(model).__name__
        self.threshold = threshold
        self.horizon = max(1, int(horizon))
        self.model_: LoadModel = make_model(model) if isinstance(model, str) else model
        self.classifier_: OnlineLogistic = make_classifier()
        self.history_ = BatchHistory()
        self.horizon_model_ = Residual(OnlineLinear(FEATURES, lr=0.005, intercept_lr=0.005))
        self.horizon_classifier_ = make_classifier()
        self._pending: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._queue = HorizonQueue(self.horizon)
        self.next_ = Scores(threshold)
        self.far_ = Scores(threshold)
        self._recent = deque(maxlen=RECENT)  # per window: (model error, baseline error) sums
        self.windows_ = 0

    def step(
        self,
        loads: Mapping[str, float],
        extra: Mapping[str, Mapping[str, float]] | None = None,
        shares: Mapping[str, float] | None = None,
    ) -> dict[str, Prediction]:
        """Learn from this window's ``loads`` (entity -> load), then predict.

        ``extra`` adds per-entity probe features; ``shares`` gives each entity's share of the
        table that was in force (a feature: a worker given less traffic sheds load)."""
        names = list(loads)
        gone = [e for e in self.history_.index if e not in loads]
        if gone:  # an entity missing from a window is gone (a closed connection): forgotten
            self.forget(gone)
        if not names:
            self._pending = None
            return {}
        rows = self.history_.rows(names)
        y = np.fromiter(loads.values(), dtype=float, count=len(names))
        self._learn_next(rows, y)
        for done in self._queue.push(rows, y):
            self._learn_horizon(*done)
        extra = extra or {}
        columns = {
            f: np.array([extra.get(e, {}).get(f, np.nan) for e in names], dtype=float)
            for f in EXTRA
        }
        share = np.array([(shares or {}).get(e, 0.0) for e in names], dtype=float)
        self.history_.push(rows, y, columns, share)
        X = self.history_.features(rows)
        model, base = self.model_.predict_many(X), X[:, 0]
        chosen = model if self._model_trusted() else base
        p_hot = self.classifier_.predict_many(X)
        self._pending = (rows, X, model, p_hot)
        far = p_far = None
        if self.horizon > 1:
            far = self.horizon_model_.predict_many(X)
            p_far = self.horizon_classifier_.predict_many(X)
            self._queue.add(rows, X, far, p_far)
        return {
            e: Prediction(
                e,
                float(chosen[i]),
                float(base[i]),
                float(p_hot[i]),
                float(far[i]) if far is not None else None,
                float(p_far[i]) if p_far is not None else None,
            )
            for i, e in enumerate(names)
        }

    def _learn_next(self, rows: np.ndarray, y: np.ndarray) -> None:
        if self._pending is None:
            return
        prev_rows, X, model, p_hot = self._pending
        pos = {int(r): i for i, r in enumerate(rows)}
        keep = np.array([int(r) in pos for r in prev_rows])
        if not keep.any():
            return
        X, model, p_hot = X[keep], model[keep], p_hot[keep]
        target = y[[pos[int(r)] for r in prev_rows[keep]]]
        base = X[:, 0]
        self.next_.add(model, p_hot, base, target)
        self._recent.append(
            (float(np.abs(model - target).sum()), float(np.abs(base - target).sum()))
        )
        self.model_.learn_many(X, target)
        self.classifier_.learn_many(X, target > self.threshold)
        self.windows_ += 1

    def _learn_horizon(self, X: np.ndarray, far: np.ndarray, p_far: np.ndarray,
                       mean: np.ndarray, peak: np.ndarray) -> None:  # fmt: skip
        self.far_.add(far, p_far, X[:, 0], mean, hot=peak > self.threshold)
        self.horizon_model_.learn_many(X, mean)
        self.horizon_classifier_.learn_many(X, peak > self.threshold)

    def _model_trusted(self) -> bool:
        if not self._recent:
            return True
        model, base = np.sum(self._recent, axis=0)
        return model <= base

    def forget(self, entities: list[str]) -> None:
        """Drop what was learned about these entities (their history and pending
        predictions): a worker replaced by another process starts afresh."""
        rows = {self.history_.index[e] for e in entities if e in self.history_.index}
        self.history_.forget(entities)
        if not rows:
            return
        self._queue.forget(rows)
        if self._pending is not None:
            keep = np.array([int(r) not in rows for r in self._pending[0]], dtype=bool)
            self._pending = tuple(a[keep] for a in self._pending)  # type: ignore[assignment]

    def recent_mae(self) -> tuple[float, float]:
        """(model, baseline) mean absolute error per entity over the last windows."""
        return self.next_.recent_mae()

    def scores(self) -> dict[str, Any]:
        """Prequential metrics since the start, for the model and the baseline, for the next
        window and (with a horizon) over the horizon."""
        out = {"windows": self.windows_, **self.next_.summary("")}
        if self.horizon > 1:
            out.update(self.far_.summary("horizon_"))
        return out
