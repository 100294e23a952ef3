"""Online linear regression on standardized features, with state tuner owns.

Each feature is standardized with its running mean and variance (Welford; a feature with no
variance yet contributes 0), and the weights follow stochastic gradient descent on the
squared error, the gradient clipped. It follows river's ``learn_one`` / ``predict_one`` (and
:meth:`OnlineLinear.predict_many` for rows at once), and its state is plain numbers
(:meth:`OnlineLinear.state`) that a saved model stores as JSON and reads back, with no
library's private attributes involved.

>>> m = OnlineLinear(lr=0.05, intercept_lr=0.05)
>>> for i in range(400):
...     x = {"a": float(i % 7), "b": 1.0}
...     m.learn_one(x, 2.0 * x["a"] + 1.0)
>>> round(m.predict_one({"a": 3.0, "b": 1.0}), 1)
7.0
>>> OnlineLinear.from_state(m.state()).predict_one({"a": 3.0}) == m.predict_one({"a": 3.0})
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class OnlineLinear:
    """Standardized features, SGD on the squared error; see the module text.

    Parameters
    ----------
    lr : float
        Step size of the weights.
    intercept_lr : float
        Step size of the intercept.
    clip : float
        The loss gradient is clipped to [-clip, clip] before each step.
    """

    lr: float = 0.005
    intercept_lr: float = 0.005
    clip: float = 0.5
    count: dict[str, int] = field(default_factory=dict, init=False)
    mean: dict[str, float] = field(default_factory=dict, init=False)
    m2: dict[str, float] = field(default_factory=dict, init=False)
    weights: dict[str, float] = field(default_factory=dict, init=False)
    intercept: float = field(default=0.0, init=False)

    def _scaled(self, x: Mapping[str, float]) -> dict[str, float]:
        out = {}
        for k, v in x.items():
            n = self.count.get(k, 0)
            var = self.m2.get(k, 0.0) / n if n else 0.0
            out[k] = (v - self.mean.get(k, 0.0)) / math.sqrt(var) if var > 0 else 0.0
        return out

    def predict_one(self, x: Mapping[str, float]) -> float:
        z = self._scaled(x)
        return self.intercept + sum(self.weights.get(k, 0.0) * v for k, v in z.items())

    def learn_one(self, x: Mapping[str, float], y: float) -> None:
        for k, v in x.items():  # the scaler learns first, as a river pipeline's does
            n = self.count.get(k, 0) + 1
            mean = self.mean.get(k, 0.0)
            delta = v - mean
            mean += delta / n
            self.count[k], self.mean[k] = n, mean
            self.m2[k] = self.m2.get(k, 0.0) + delta * (v - mean)
        z = self._scaled(x)
        pred = self.intercept + sum(self.weights.get(k, 0.0) * v for k, v in z.items())
        g = min(max(2.0 * (pred - y), -self.clip), self.clip)
        for k, v in z.items():
            self.weights[k] = self.weights.get(k, 0.0) - self.lr * g * v
        self.intercept -= self.intercept_lr * g

    def predict_many(self, X: np.ndarray, names: list[str]) -> np.ndarray:
        """Predictions for the rows of ``X`` (columns ``names``; NaN: the feature is absent)."""
        mean = np.array([self.mean.get(k, 0.0) for k in names])
        n = np.array([self.count.get(k, 0) for k in names], dtype=float)
        var = np.divide([self.m2.get(k, 0.0) for k in names], n, out=np.zeros(len(names)),
                        where=n > 0)  # fmt: skip
        sd = np.sqrt(var)
        z = np.divide(X - mean, sd, out=np.zeros_like(X, dtype=float), where=sd > 0)
        z = np.nan_to_num(z, nan=0.0)
        w = np.array([self.weights.get(k, 0.0) for k in names])
        return self.intercept + z @ w

    # -- state ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Counts, means and variances per feature, weights and intercept, as JSON types."""
        return {
            "counts": dict(self.count),
            "means": dict(self.mean),
            "vars": {k: self.m2[k] / n if (n := self.count[k]) else 0.0 for k in self.m2},
            "weights": dict(self.weights),
            "intercept": float(self.intercept),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], **params: float) -> OnlineLinear:
        """A model with a saved :meth:`state` (checked by :mod:`tuner.learn.modelfile`)."""
        m = cls(**params)
        m.count = {k: int(v) for k, v in state["counts"].items()}
        m.mean = {k: float(v) for k, v in state["means"].items()}
        m.m2 = {k: float(v) * m.count.get(k, 0) for k, v in state["vars"].items()}
        m.weights = {k: float(v) for k, v in state["weights"].items()}
        m.intercept = float(state["intercept"])
        return m
