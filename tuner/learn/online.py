"""The online hotspot learner: learns from each closed window, predicts the next ones.

Every window, for all entities of a channel at once (a worker, a CPU, a socket, a backend;
arrays, not a loop per entity), :meth:`Learner.step`

1. scores the predictions made one window ago against the loads now observed (prequential:
   each prediction is scored before its outcome is learned from), for the model and for the
   last-value baseline, and learns from those outcomes (one model for all entities, so a new
   worker is predicted well from its first window); the outcomes of :data:`LEARN_EVERY`
   windows are scored and learned from together, in one step;
2. does the same for the **horizon**: the mean load over the next ``horizon`` windows (the
   life of a connection placed now) and whether the load passes the threshold in any of them,
   scored and learned once those windows have passed;
3. predicts the next window's load, the horizon's mean load, and the probabilities that the
   next window, or any window of the horizon, is hot (load above ``threshold``).

The load it reports is the last value plus a share of the change the model predicts, the
share in [0, 1] fitted online on the last few learning steps' outcomes (:class:`Blend`):
where the model has no skill the prediction is the last value, where it has some it takes
as much of it as helped lately, so the prediction an agent acts on cannot drift far from the
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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuner.learn.challenge import Challenge
from tuner.learn.features import EXTRA, FEATURES
from tuner.learn.history import BatchHistory
from tuner.learn.linear import Head, Heads, LeastSquares
from tuner.learn.models import CLIP, LoadModel, make_model
from tuner.learn.scores import HorizonQueue, Scores, SkillSummary

LEARN_EVERY = 4  # windows whose outcomes are learned from in one step
BLEND_DECAY = 0.7  # the blend's memory: a few learning steps (the model's skill comes and goes)
# the learner's outputs: the next window's load (the change from the last value), whether it
# is hot, the horizon's mean load (its change from the last value), whether any of it is hot;
# the loads by online least squares, the hotspots by logistic heads over the same rows
HEADS = (
    Head("hot", logistic=True, lr=0.05, intercept_lr=0.05, clip=1.0),
    Head("far_hot", logistic=True, lr=0.05, intercept_lr=0.05, clip=1.0),
)
LOAD, HOT, FAR, FAR_HOT = range(4)  # the outputs' columns; the hotspot ones are HOT::2


def _clip(x: np.ndarray) -> np.ndarray:
    """Loads within [0, CLIP] (np.clip's wrapper costs twice the two ufuncs)."""
    return np.minimum(np.maximum(x, 0.0), CLIP)


# not frozen: one is made per entity per window, and a frozen dataclass's __init__ (an
# object.__setattr__ per field) costs five times a plain one's; nothing changes it after
@dataclass(slots=True)
class Prediction:
    """What the learner expects of one entity."""

    entity: str
    load: float  # predicted load of the next window, CPUs (the blend acted on)
    baseline: float  # the last-value prediction
    p_hot: float  # probability that the next window's load > threshold
    horizon_load: float | None = None  # predicted mean load over the horizon
    p_hot_horizon: float | None = None  # probability that a window of the horizon is hot


class Blend:
    """The prediction acted on: the last value plus a share ``weight`` of the change the
    model predicts, the share in [0, 1] fitted by least squares on recent outcomes (sums
    decayed by ``decay`` a learning step). 0 is the last value, 1 the model: where the model
    has no skill the blend is the last value, where it has some it takes as much of it as
    helped lately. Until there is an outcome, the last value.

    >>> b = Blend()
    >>> b.weight
    0.0
    >>> b.add(np.array([0.5, 0.3]), np.array([0.3, 0.3]), np.array([0.4, 0.3])); round(b.weight, 6)
    0.5
    >>> b.mix(np.array([0.5]), np.array([0.3])).round(3).tolist()
    [0.4]
    """

    def __init__(self, decay: float = BLEND_DECAY) -> None:
        self.decay = decay
        self.sxy = 0.0  # decayed sum of (model's change) x (actual change)
        self.sxx = 0.0  # decayed sum of (model's change) squared

    def add(self, model: np.ndarray, base: np.ndarray, actual: np.ndarray) -> None:
        dm, dy = model - base, actual - base
        self.sxy = self.decay * self.sxy + float(dm @ dy)
        self.sxx = self.decay * self.sxx + float(dm @ dm)

    @property
    def weight(self) -> float:
        if self.sxx <= 1e-12:
            return 0.0
        return min(1.0, max(0.0, self.sxy / self.sxx))

    def mix(self, model: np.ndarray, base: np.ndarray) -> np.ndarray:
        return base + self.weight * (model - base)


class Learner:
    """One load model and one hotspot classifier over all entities, plus the baseline, for
    the next window and for the horizon.

    All see one standardization of the features a window (:class:`~tuner.learn.linear.Heads`'
    scaler): the two hotspot classifiers are logistic heads of it; the horizon's load, and the
    next window's when the model is ``linear``, are online least squares
    (:class:`~tuner.learn.linear.LeastSquares`). Another model (``tree``, ``last``, a saved
    one) is asked beside them.

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
        own = isinstance(model, str) and model == "linear"
        self.model_: LoadModel | None = None if own else (
            make_model(model) if isinstance(model, str) else model
        )  # fmt: skip
        self.heads_ = Heads(len(FEATURES), HEADS)  # the scaler, and the hotspot heads
        self.load_ = LeastSquares(len(FEATURES))  # next window's change of load
        self.far_load_ = LeastSquares(len(FEATURES))  # the horizon's
        self.history_ = BatchHistory()
        self._pending: tuple[np.ndarray, ...] | None = None  # rows, Z, base, model, p_hot, X
        self._queue = HorizonQueue(self.horizon, len(FEATURES))
        self.next_ = Scores(threshold)
        self.far_ = Scores(threshold)
        self._next = Blend()  # how much of the model's predicted change to take
        self._far = Blend()  # the same over the horizon
        self._next_batch: list[tuple[np.ndarray, ...]] = []  # outcomes not learned from yet
        self._far_batch: list[tuple[np.ndarray, ...]] = []
        self._steps = 0
        self._outputs = self._weights()
        self.windows_ = 0
        self.challenge_: Challenge | None = None  # a new model on trial (model.reload_s)
        self._challenged: tuple[np.ndarray, np.ndarray] | None = None  # rows, its prediction

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
        index = self.history_.index
        gone = [] if index.keys() == loads.keys() else [e for e in index if e not in loads]
        if gone:  # an entity missing from a window is gone (a closed connection): forgotten
            self.forget(gone)
        if not names:
            self._pending = None
            return {}
        rows = self.history_.rows(names)
        ix = self.history_.at(rows)  # a slice where it can be: cheaper to index with
        y = np.fromiter(loads.values(), dtype=float, count=len(names))
        self._learn_next(rows, y)
        if self.horizon > 1 and (done := self._queue.push(ix, y)) is not None:
            self._far_batch.append(done)  # Z, base, raw, p_far, mean, peak
        self._steps += 1
        if self._steps % LEARN_EVERY == 0:
            self._learn()
        extra = extra or {}
        columns = {
            f: np.array([extra.get(e, {}).get(f, np.nan) for e in names], dtype=float)
            for f in EXTRA
        }
        share = np.array([(shares or {}).get(e, 0.0) for e in names], dtype=float)
        self.history_.push(rows, y, columns, share)
        X = self.history_.features(rows)
        base = X[:, 0]
        self.heads_.observe(X)
        Z = self.heads_.standardize(X)
        W, b = self._outputs
        out = Z @ W + b  # the four outputs in one product; the hotspot ones are logistic
        out[:, HOT::2] = 1.0 / (1.0 + np.exp(-np.minimum(np.maximum(out[:, HOT::2], -30), 30)))
        model = _clip(base + out[:, LOAD]) if self.model_ is None else self.model_.predict_many(X)
        chosen = self._next.mix(model, base)
        if self.challenge_ is not None:
            self._challenged = (rows, self.challenge_.predict(X))
        p_hot = out[:, HOT]
        self._pending = (rows, Z, base, model, chosen, out, X)
        far = p_far = None
        if self.horizon > 1:
            far, p_far = self._far.mix(_clip(base + out[:, FAR]), base), out[:, FAR_HOT]
            self._queue.add(ix, Z, base, out[:, FAR], p_far, far)
        # lists of Python floats first: a float() per numpy element is most of this loop's cost
        nones = [None] * len(names)
        cols = zip(names, chosen.tolist(), base.tolist(), p_hot.tolist(),
                   far.tolist() if far is not None else nones,
                   p_far.tolist() if p_far is not None else nones, strict=True)  # fmt: skip
        return {c[0]: Prediction(*c) for c in cols}

    def _learn_next(self, rows: np.ndarray, y: np.ndarray) -> None:
        if self._pending is None:
            return
        prev_rows, *arrays = self._pending
        if prev_rows is rows or (len(prev_rows) == len(rows) and np.array_equal(prev_rows, rows)):
            target = y  # the same entities in the same order: the common case
        else:
            pos = {int(r): i for i, r in enumerate(rows)}
            keep = np.array([int(r) in pos for r in prev_rows])
            if not keep.any():
                return
            arrays = [a[keep] for a in arrays]
            target = y[[pos[int(r)] for r in prev_rows[keep]]]
        Z, base, model, chosen, out, X = arrays
        if self.challenge_ is not None and self._challenged is not None:
            c_rows, c_pred = self._challenged
            if np.array_equal(c_rows, prev_rows) and len(target) == len(c_pred):
                self.challenge_.score(c_pred, model, X, target)
            self._challenged = None
        self._next_batch.append((Z, out, base, model, chosen, X, target))
        self.windows_ += 1

    def _learn(self) -> None:
        """Score and learn from the outcomes gathered since the last call, in one step (the
        heads see a few windows' rows at once: far fewer array operations a window)."""
        if self._next_batch:
            batch = zip(*self._next_batch, strict=True)
            Z, out, base, model, chosen, X, target = (np.concatenate(a) for a in batch)
            self._next_batch.clear()
            self.next_.add(chosen, out[:, HOT], base, target)
            self._next.add(model, base, target)
            self.load_.learn(Z, target - base)
            T = (target > self.threshold)[:, None]
            self.heads_.learn(Z, T, slice(0, 1), out[:, HOT : HOT + 1])
            if self.model_ is not None:
                self.model_.learn_many(X, target)
        if self._far_batch:
            batch = zip(*self._far_batch, strict=True)
            Z, base, raw, p_far, chosen, mean, peak = (np.concatenate(a) for a in batch)
            self._far_batch.clear()
            hot = peak > self.threshold
            self.far_.add(chosen, p_far, base, mean, hot=hot)
            self._far.add(_clip(base + raw), base, mean)
            self.far_load_.learn(Z, mean - base)
            self.heads_.learn(Z, hot[:, None], slice(1, 2), p_far[:, None])
        self._outputs = self._weights()

    def _weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The weights and intercepts of the four outputs side by side (:data:`LOAD`,
        :data:`HOT`, :data:`FAR`, :data:`FAR_HOT`), so that a window predicts all of them in
        one product: made again whenever a learning step changed them."""
        heads, load, far = self.heads_, self.load_, self.far_load_
        W = np.column_stack([load.W[:-1], heads.W[:, 0], far.W[:-1], heads.W[:, 1]])
        return W, np.array([load.W[-1], heads.b[0], far.W[-1], heads.b[1]])

    def challenge(self, challenger: Challenge) -> None:
        """Put a new load model on trial beside the one in use (see
        :mod:`tuner.learn.challenge`); :meth:`settle` gives the verdict."""
        self.challenge_ = challenger
        self._challenged = None

    def settle(self) -> dict[str, Any] | None:
        """When the trial is over: adopt the challenger if it did no worse, drop it
        otherwise; returns the trial's result with ``adopted`` (None while it runs)."""
        ch = self.challenge_
        if ch is None or not ch.done():
            return None
        result = {**ch.result(), "adopted": ch.better()}
        if result["adopted"]:
            self.model_ = ch.model
            self.model = type(ch.model).__name__
        self.challenge_ = None
        self._challenged = None
        return result

    def forget(self, entities: list[str]) -> None:
        """Drop what was learned about these entities (their history and pending
        predictions): a worker replaced by another process starts afresh."""
        rows = {self.history_.index[e] for e in entities if e in self.history_.index}
        self.history_.forget(entities)
        if not rows:
            return
        self._queue.forget(rows)
        self._challenged = None  # this window's trial prediction is not scored
        if self._pending is not None:
            keep = np.array([int(r) not in rows for r in self._pending[0]], dtype=bool)
            self._pending = tuple(a[keep] for a in self._pending)

    def recent_mae(self) -> tuple[float, float]:
        """(model, baseline) mean absolute error per entity over the last windows."""
        return self.next_.recent_mae()

    def scores(self) -> dict[str, Any]:
        """Prequential metrics since the start, for the model and the baseline, for the next
        window and (with a horizon) over the horizon, as flat JSON (:meth:`skill` typed)."""
        out = {"windows": self.windows_, **self.next_.summary("")}
        if self.horizon > 1:
            out.update(self.far_.summary("horizon_"))
        return out

    def skill(self) -> SkillSummary:
        """The same as :meth:`scores`, typed."""
        far = self.horizon > 1
        return SkillSummary(
            self.windows_, self.horizon, self.next_.skill("model"), self.next_.skill("baseline"),
            self.far_.skill("model") if far else None, self.far_.skill("baseline") if far else None,
        )  # fmt: skip
