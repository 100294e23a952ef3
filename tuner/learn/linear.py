"""Online linear models on standardized features, over many rows at once, with state tuner
owns: :class:`OnlineLinear` (regression, squared error) and :class:`OnlineLogistic`
(probability, log loss).

Each feature is standardized with its running mean and variance (merged batch by batch; a
feature with no variance yet, or missing in a row as NaN, contributes 0), and the weights
follow stochastic gradient descent, each row's gradient clipped. A window's rows (one per
entity) make one step: the gradients are summed, and scaled down when there are more than
:data:`BATCH` rows, so a large group learns as steadily as a small one. One row at a time
(``learn_one`` / ``predict_one`` with a dict, as river's models take) is the same with a
batch of one. The state is plain numbers (:meth:`OnlineLinear.state`) that a saved model
stores as JSON.

>>> m = OnlineLinear(["a", "b"], lr=0.05, intercept_lr=0.05)
>>> for i in range(400):
...     x = {"a": float(i % 7), "b": 1.0}
...     m.learn_one(x, 2.0 * x["a"] + 1.0)
>>> round(m.predict_one({"a": 3.0, "b": 1.0}), 1)
7.0
>>> OnlineLinear.from_state(m.state(), ["a", "b"]).predict_one({"a": 3.0}) == m.predict_one(
...     {"a": 3.0})
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

BATCH = 16  # rows a step counts in full; a larger batch's summed gradient is scaled to this


class RunningScaler:
    """Per-column running mean and variance, merged batch by batch (NaN: not counted)."""

    def __init__(self, width: int) -> None:
        self.n = np.zeros(width)
        self.mean = np.zeros(width)
        self.m2 = np.zeros(width)

    def learn(self, X: np.ndarray) -> None:
        valid = ~np.isnan(X)
        nb = valid.sum(axis=0)
        if not nb.any():
            return
        Xz = np.where(valid, X, 0.0)
        mb = np.divide(Xz.sum(axis=0), nb, out=np.zeros_like(self.mean), where=nb > 0)
        m2b = np.where(valid, (X - mb) ** 2, 0.0).sum(axis=0)
        n = self.n + nb
        delta = mb - self.mean
        safe = np.where(n > 0, n, 1)
        self.mean = self.mean + delta * nb / safe
        self.m2 = self.m2 + m2b + delta**2 * self.n * nb / safe
        self.n = n

    def transform(self, X: np.ndarray) -> np.ndarray:
        var = np.divide(self.m2, self.n, out=np.zeros_like(self.m2), where=self.n > 0)
        sd = np.sqrt(var)
        z = np.divide(X - self.mean, sd, out=np.zeros(X.shape), where=sd > 0)
        return np.nan_to_num(z, nan=0.0)


class _Online:
    """What the two models share: features in a fixed order, a scaler, weights, a step."""

    def __init__(self, features: Sequence[str], lr: float, intercept_lr: float, clip: float):
        self.features = list(features)
        self.lr, self.intercept_lr, self.clip = lr, intercept_lr, clip
        self.scaler = RunningScaler(len(self.features))
        self.w = np.zeros(len(self.features))
        self.b = 0.0

    def row(self, x: Mapping[str, float]) -> np.ndarray:
        return np.array([[x.get(f, np.nan) for f in self.features]], dtype=float)

    def _raw(self, X: np.ndarray) -> np.ndarray:
        return self.b + self.scaler.transform(X) @ self.w

    def _step(self, Z: np.ndarray, g: np.ndarray) -> None:
        g = np.clip(g, -self.clip, self.clip)
        k = min(1.0, BATCH / max(len(g), 1))
        self.w -= self.lr * k * (g @ Z)
        self.b -= self.intercept_lr * k * float(g.sum())

    def state(self) -> dict[str, Any]:
        """Counts, means and variances per feature, weights and intercept, as JSON types."""
        f, s = self.features, self.scaler
        var = np.divide(s.m2, s.n, out=np.zeros_like(s.m2), where=s.n > 0)
        return {
            "counts": {k: int(n) for k, n in zip(f, s.n, strict=True) if n > 0},
            "means": {k: float(v) for k, v, n in zip(f, s.mean, s.n, strict=True) if n > 0},
            "vars": {k: float(v) for k, v, n in zip(f, var, s.n, strict=True) if n > 0},
            "weights": {k: float(v) for k, v in zip(f, self.w, strict=True) if v != 0.0},
            "intercept": float(self.b),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        for i, k in enumerate(self.features):
            n = float(state["counts"].get(k, 0))
            self.scaler.n[i] = n
            self.scaler.mean[i] = float(state["means"].get(k, 0.0))
            self.scaler.m2[i] = float(state["vars"].get(k, 0.0)) * n
            self.w[i] = float(state["weights"].get(k, 0.0))
        self.b = float(state["intercept"])


class OnlineLinear(_Online):
    """Linear regression: ``predict`` is the intercept plus the weighted standardized row."""

    def __init__(self, features: Sequence[str], lr: float = 0.005, intercept_lr: float = 0.005,
                 clip: float = 0.5) -> None:  # fmt: skip
        super().__init__(features, lr, intercept_lr, clip)

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        return self._raw(X)

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        self.scaler.learn(X)  # the scaler learns first, as a river pipeline's does
        Z = self.scaler.transform(X)
        self._step(Z, 2.0 * (self.b + Z @ self.w - y))

    def predict_one(self, x: Mapping[str, float]) -> float:
        return float(self.predict_many(self.row(x))[0])

    def learn_one(self, x: Mapping[str, float], y: float) -> None:
        self.learn_many(self.row(x), np.array([y]))

    @classmethod
    def from_state(cls, state: Mapping[str, Any], features: Sequence[str], **params: float):
        """A model with a saved :meth:`state` (checked by :mod:`tuner.learn.modelfile`)."""
        m = cls(features, **params)
        m.set_state(state)
        return m


class OnlineLogistic(_Online):
    """Logistic regression: the probability that a row's label is true.

    >>> c = OnlineLogistic(["x"], lr=0.1)
    >>> for i in range(2000):
    ...     c.learn_many(np.array([[i % 2 * 1.0]]), np.array([i % 2 == 1]))
    >>> [round(float(p), 1) for p in c.predict_many(np.array([[0.0], [1.0]]))]
    [0.0, 1.0]
    """

    def __init__(self, features: Sequence[str], lr: float = 0.05, clip: float = 1.0) -> None:
        super().__init__(features, lr, lr, clip)

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self._raw(X), -30, 30)))

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        self.scaler.learn(X)
        Z = self.scaler.transform(X)
        p = 1.0 / (1.0 + np.exp(-np.clip(self.b + Z @ self.w, -30, 30)))
        self._step(Z, p - y.astype(float))
