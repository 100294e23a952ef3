"""The online hotspot learner: learns from each closed window, predicts the next one.

Every window, for every entity (a worker, a CPU, a socket, a backend), :meth:`Learner.step`

1. scores the prediction it made one window ago against the load now observed (prequential:
   each prediction is scored before its outcome is learned from), for the model and for the
   last-value baseline;
2. learns from that outcome (one model for all entities, so a new worker is predicted well
   from the first window);
3. predicts the next window's load and the probability that it exceeds ``threshold``.

>>> lr = Learner(model="linear", threshold=0.8)
>>> for i in range(300):
...     hot = i % 4 == 0                       # every 4th window is hot
...     preds = lr.step({"w0": 0.9 if hot else 0.3})
>>> s = lr.scores()
>>> s["windows"], s["model_mae"] < s["baseline_mae"]
(299, True)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tuner.learn.features import History
from tuner.learn.models import LastValue, make_classifier, make_model


@dataclass(frozen=True)
class Prediction:
    """What the learner expects of one entity in the next window."""

    entity: str
    load: float  # predicted load, fraction of a CPU
    baseline: float  # the last-value prediction
    p_hot: float  # probability that load > threshold


@dataclass
class _Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    n: int = 0
    abs_err: float = 0.0
    recent: deque = field(default_factory=lambda: deque(maxlen=200))

    def add(self, predicted: float, hot_predicted: bool, actual: float, hot: bool) -> None:
        err = abs(predicted - actual)
        self.n += 1
        self.abs_err += err
        self.recent.append(err)
        self.tp += hot_predicted and hot
        self.fp += hot_predicted and not hot
        self.fn += hot and not hot_predicted

    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0


class Learner:
    """One load model and one hotspot classifier over all entities, plus the baseline.

    Parameters
    ----------
    model : {"linear", "tree", "last"} or a model object
        The load model (see :mod:`tuner.learn.models`), or any object with river's
        ``learn_one`` / ``predict_one`` (:class:`tuner.learn.boost.OfflineModel`).
    threshold : float
        Load above which an entity is a hotspot, as a fraction of a CPU.
    """

    def __init__(self, model: str | Any = "linear", threshold: float = 0.8) -> None:
        # a name from tuner.learn.models, or a model object (e.g. a saved offline model)
        self.model = model if isinstance(model, str) else type(model).__name__
        self.threshold = threshold
        self.model_ = make_model(model) if isinstance(model, str) else model
        self.classifier_ = make_classifier()
        self.baseline_ = LastValue()
        self.history_: dict[str, History] = {}
        self._pending: dict[str, tuple[dict[str, float], Prediction]] = {}
        self._model = _Counts()
        self._base = _Counts()
        self.windows_ = 0

    def step(
        self,
        loads: dict[str, float],
        extra: dict[str, dict[str, float]] | None = None,
        shares: dict[str, float] | None = None,
    ) -> dict[str, Prediction]:
        """Learn from this window's ``loads`` (entity -> load), then predict the next window.

        ``extra`` adds per-entity probe features; ``shares`` gives each entity's share of the
        table that was in force (a feature: a worker given less traffic sheds load)."""
        extra, shares = extra or {}, shares or {}
        scored = False
        out: dict[str, Prediction] = {}
        for entity, load in loads.items():
            hot = load > self.threshold
            if entity in self._pending:
                x, p = self._pending[entity]
                self._model.add(p.load, p.p_hot > 0.5, load, hot)
                self._base.add(p.baseline, p.baseline > self.threshold, load, hot)
                self.model_.learn_one(x, load)
                self.classifier_.learn_one(x, hot)
                scored = True
            h = self.history_.setdefault(entity, History())
            h.push(load, extra.get(entity, {}), shares.get(entity, 0.0))
            x = h.features()
            proba = self.classifier_.predict_proba_one(x).get(True, 0.0)
            out[entity] = Prediction(entity, self.model_.predict_one(x), x["load"], proba)
            self._pending[entity] = (x, out[entity])
        for gone in set(self._pending) - set(loads):
            del self._pending[gone]
            self.history_.pop(gone, None)
        self.windows_ += scored
        return out

    def forget(self, entities: list[str]) -> None:
        """Drop what was learned about these entities (their history and pending prediction):
        a worker replaced by another process starts afresh. The model itself is shared."""
        for e in entities:
            self.history_.pop(e, None)
            self._pending.pop(e, None)

    def recent_mae(self) -> tuple[float, float]:
        """(model, baseline) mean absolute error over the last 200 scored predictions."""

        def mean(d: deque) -> float:
            return sum(d) / len(d) if d else 0.0

        return mean(self._model.recent), mean(self._base.recent)

    def scores(self) -> dict[str, float]:
        """Prequential metrics since the start, for the model and the baseline."""
        n = max(1, self._model.n)
        return {
            "windows": self.windows_,
            "model_mae": self._model.abs_err / n,
            "baseline_mae": self._base.abs_err / n,
            "model_precision": self._model.precision(),
            "model_recall": self._model.recall(),
            "baseline_precision": self._base.precision(),
            "baseline_recall": self._base.recall(),
        }
