"""The load models the learner can use, and the one interface they share.

A model takes a window's rows at once (:class:`LoadModel`: ``predict_many`` /
``learn_many``, one row per entity, columns in :data:`~tuner.learn.features.FEATURES`
order, NaN for a feature that was not given), so the learner's cost per window does not grow
by a Python loop per entity. ``predict_one`` / ``learn_one`` take one row as a dict, as
river's models do.

- ``last``: the last value; the baseline every model is measured against.
- ``linear``: online least squares on standardized features (:mod:`tuner.learn.linear`,
  tuner's own), predicting the *change* of load from the last value (so that knowing
  nothing, it predicts the last value).
- ``tree``: river's Hoeffding tree regressor on the change, one row at a time (its cost grows
  with the number of entities).

>>> m = make_model("linear")
>>> for i in range(200):
...     load = 0.5 + 0.4 * (i % 2)           # alternates 0.5, 0.9
...     m.learn_one({"load": load, "lag1": 1.4 - load}, 1.4 - load)
>>> round(m.predict_one({"load": 0.9, "lag1": 0.5}), 1)
0.5
>>> LastValue().predict_one({"load": 0.9})
0.9
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from tuner.errors import TunerError
from tuner.learn.features import FEATURES
from tuner.learn.linear import OnlineLeastSquares, OnlineLogistic

MODELS = ("linear", "tree", "last")
CLIP = 4.0  # no load is predicted above 4 CPUs


class LoadModel(Protocol):
    def predict_many(self, X: np.ndarray) -> np.ndarray: ...

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None: ...


def row(x: Mapping[str, float]) -> np.ndarray:
    """A feature dict as one row of :data:`FEATURES` (NaN where absent)."""
    return np.array([[x.get(f, np.nan) for f in FEATURES]], dtype=float)


class RowApi:
    """``predict_one`` / ``learn_one`` for a model of many rows."""

    def predict_one(self, x: Mapping[str, float]) -> float:
        return float(self.predict_many(row(x))[0])  # type: ignore[attr-defined]

    def learn_one(self, x: Mapping[str, float], y: float) -> None:
        self.learn_many(row(x), np.array([y]))  # type: ignore[attr-defined]


class LastValue(RowApi):
    """Predicts that the next window looks like the last one."""

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        return X[:, 0].copy()

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        pass


class Residual(RowApi):
    """Learns ``y - load`` with ``inner`` and adds the load back (clipped to [0, 4])."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        return np.clip(X[:, 0] + self.inner.predict_many(X), 0.0, CLIP)

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        self.inner.learn_many(X, y - X[:, 0])


class RiverRows:
    """A river regressor taking rows one by one (dicts without the absent features)."""

    def __init__(self, regressor: Any) -> None:
        self.regressor = regressor

    @staticmethod
    def _dicts(X: np.ndarray) -> list[dict[str, float]]:
        return [
            {f: float(v) for f, v in zip(FEATURES, r, strict=True) if not np.isnan(v)} for r in X
        ]

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        return np.array([self.regressor.predict_one(x) for x in self._dicts(X)], dtype=float)

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        for x, target in zip(self._dicts(X), y.tolist(), strict=True):
            self.regressor.learn_one(x, target)


def make_model(kind: str, seed: int = 0) -> Any:
    """A fresh model of the named kind (one of :data:`MODELS`)."""
    if kind == "last":
        return LastValue()
    if kind == "linear":
        return Residual(OnlineLeastSquares(FEATURES))
    if kind == "tree":
        from river import tree

        return Residual(
            RiverRows(
                tree.HoeffdingTreeRegressor(
                    grace_period=50, leaf_prediction="adaptive", model_selector_decay=0.9
                )
            )
        )
    raise TunerError(f"unknown model {kind!r}", f"choose from {', '.join(MODELS)}")


def make_classifier() -> OnlineLogistic:
    """The hotspot classifier: probability that a load over the threshold is coming."""
    return OnlineLogistic(FEATURES, lr=0.05)
