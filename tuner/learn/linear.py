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
from dataclasses import dataclass
from typing import Any

import numpy as np

BATCH = 16  # rows a step counts in full; a larger batch's summed gradient is scaled to this
SETTLED, THIN = 500, 8  # Heads.observe: rows before the scaler learns one batch in THIN


class RunningScaler:
    """Per-column running mean and variance, merged batch by batch (NaN: not counted), and
    the standardization they give (a column without variance, or NaN, gives 0)."""

    def __init__(self, width: int) -> None:
        self.n = np.zeros(width)
        self.mean = np.zeros(width)
        self.m2 = np.zeros(width)
        self.inv_sd = np.zeros(width)  # 1 / standard deviation, 0 where there is none

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
        self._update()

    def _update(self) -> None:
        var = np.divide(self.m2, self.n, out=np.zeros_like(self.m2), where=self.n > 0)
        sd = np.sqrt(var)
        self.inv_sd = np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > 0)

    def transform(self, X: np.ndarray) -> np.ndarray:
        Z = (X - self.mean) * self.inv_sd
        Z[np.isnan(Z)] = 0.0
        return Z


@dataclass(frozen=True)
class Head:
    """One output of :class:`Heads`: a regression (squared error) or a probability
    (``logistic``, log loss), with its own steps and gradient clip."""

    name: str
    logistic: bool = False
    lr: float = 0.005
    intercept_lr: float = 0.005
    clip: float = 0.5


class Heads:
    """Several online linear models over the same rows: one scaler, one weight matrix (a
    column per head), so a window costs one standardization and one matrix product for all
    of them. :meth:`observe` lets the scaler learn a batch; :meth:`learn` takes a step for a
    slice of the heads on rows already standardized.

    >>> h = Heads(1, [Head("y", lr=0.05, intercept_lr=0.05), Head("p", logistic=True, lr=0.1)])
    >>> for i in range(2000):
    ...     X = np.array([[float(i % 2)]]); h.observe(X); Z = h.standardize(X)
    ...     h.learn(Z, np.array([[3.0 * (i % 2), i % 2]]), slice(0, 2))
    >>> Z = h.standardize(np.array([[0.0], [1.0]]))
    >>> [[round(float(v), 1) + 0.0 for v in r] for r in h.predict(Z)]
    [[0.0, 0.0], [3.0, 1.0]]
    """

    def __init__(self, width: int, heads: Sequence[Head]) -> None:
        self.heads = tuple(heads)
        self.scaler = RunningScaler(width)
        self.W = np.zeros((width, len(self.heads)))
        self.b = np.zeros(len(self.heads))
        self.lr = np.array([h.lr for h in self.heads])
        self.intercept_lr = np.array([h.intercept_lr for h in self.heads])
        self.clip = np.array([h.clip for h in self.heads])
        self.logistic = np.array([h.logistic for h in self.heads])
        self.gscale = np.where(self.logistic, 1.0, 2.0)  # d(loss)/d(output)
        self._observed = 0

    def observe(self, X: np.ndarray) -> None:
        """Let the scaler learn ``X``: every batch while it has seen fewer than
        :data:`SETTLED` rows, then one batch in :data:`THIN` (its means and variances
        barely move by then, and learning them is most of a small window's cost)."""
        self._observed += 1
        if self.scaler.n.max(initial=0.0) < SETTLED or self._observed % THIN == 0:
            self.scaler.learn(X)

    def standardize(self, X: np.ndarray) -> np.ndarray:
        return self.scaler.transform(X)

    def _out(self, R: np.ndarray, cols: slice) -> np.ndarray:
        logistic = self.logistic[cols]
        if logistic.any():
            R[:, logistic] = 1.0 / (1.0 + np.exp(-np.clip(R[:, logistic], -30, 30)))
        return R

    def predict(self, Z: np.ndarray, cols: slice = slice(None)) -> np.ndarray:
        """Each row's output of each head of ``cols``: rows x heads."""
        return self._out(Z @ self.W[:, cols] + self.b[cols], cols)

    def learn(self, Z: np.ndarray, T: np.ndarray, cols: slice,
              out: np.ndarray | None = None) -> None:  # fmt: skip
        """One step of the heads ``cols`` towards targets ``T`` (rows x heads). ``out``: the
        heads' outputs for ``Z`` as predicted when the rows were new (a step or a few
        older, as in delayed stochastic gradient descent), which saves predicting again."""
        P = self.predict(Z, cols) if out is None else out
        G = self.gscale[cols] * (P - T)
        G = np.clip(G, -self.clip[cols], self.clip[cols])
        k = min(1.0, BATCH / max(len(G), 1))
        self.W[:, cols] -= (self.lr[cols] * k) * (Z.T @ G)
        self.b[cols] -= (self.intercept_lr[cols] * k) * G.sum(axis=0)


class LeastSquares:
    """Online ridge regression on standardized rows: the decayed sums ``A = sum z z'`` and
    ``B = sum z y`` (a column of ones for the intercept) are updated with each batch and the
    weights solved from them (``(A + ridge I) W = B``, a small system: one row and column per
    feature). It reaches the least-squares fit in the time stochastic gradient descent takes
    a few steps, and each batch's weight decays by ``decay``, so it follows a load whose
    dynamics change.

    >>> ls = LeastSquares(2)
    >>> Z = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]])
    >>> ls.learn(Z, Z @ np.array([2.0, -1.0]) + 0.5)
    >>> [round(float(v), 2) for v in ls.predict(np.array([[1.0, 1.0]]))]
    [1.5]
    """

    def __init__(self, width: int, decay: float = 0.99, ridge: float = 1e-3) -> None:
        self.A = np.zeros((width + 1, width + 1))
        self.B = np.zeros(width + 1)
        self.W = np.zeros(width + 1)
        self.decay, self.ridge = decay, ridge
        self._ridge = ridge * np.eye(width + 1)

    def learn(self, Z: np.ndarray, y: np.ndarray) -> None:
        Z1 = np.empty((len(Z), Z.shape[1] + 1))  # Z and a column of ones
        Z1[:, :-1] = Z
        Z1[:, -1] = 1.0
        self.A *= self.decay
        self.A += Z1.T @ Z1
        self.B *= self.decay
        self.B += Z1.T @ y
        self.W = np.linalg.solve(self.A + self._ridge, self.B)

    def predict(self, Z: np.ndarray) -> np.ndarray:
        return Z @ self.W[:-1] + self.W[-1]


class OnlineLeastSquares:
    """:class:`LeastSquares` on raw rows of named features, standardized by its own scaler
    (what the learner's ``linear`` load model computes, for a model used alone)."""

    def __init__(self, features: Sequence[str]) -> None:
        self.features = list(features)
        self.scaler = RunningScaler(len(self.features))
        self.ls = LeastSquares(len(self.features))

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        return self.ls.predict(self.scaler.transform(X))

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        self.scaler.learn(X)
        self.ls.learn(self.scaler.transform(X), y)


class _Online:
    """One head over named features, taking raw rows: the scaler learns each batch first,
    as a river pipeline's does."""

    logistic = False

    def __init__(self, features: Sequence[str], lr: float, intercept_lr: float, clip: float):
        self.features = list(features)
        self.heads = Heads(len(self.features), [Head("y", self.logistic, lr, intercept_lr, clip)])

    @property
    def scaler(self) -> RunningScaler:
        return self.heads.scaler

    def row(self, x: Mapping[str, float]) -> np.ndarray:
        return np.array([[x.get(f, np.nan) for f in self.features]], dtype=float)

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        return self.heads.predict(self.heads.standardize(X))[:, 0]

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        self.heads.observe(X)
        self.heads.learn(self.heads.standardize(X), y.astype(float)[:, None], slice(0, 1))

    def predict_one(self, x: Mapping[str, float]) -> float:
        return float(self.predict_many(self.row(x))[0])

    def learn_one(self, x: Mapping[str, float], y: float) -> None:
        self.learn_many(self.row(x), np.array([y]))

    def state(self) -> dict[str, Any]:
        """Counts, means and variances per feature, weights and intercept, as JSON types."""
        f, s = self.features, self.scaler
        var = np.divide(s.m2, s.n, out=np.zeros_like(s.m2), where=s.n > 0)
        w = self.heads.W[:, 0]
        return {
            "counts": {k: int(n) for k, n in zip(f, s.n, strict=True) if n > 0},
            "means": {k: float(v) for k, v, n in zip(f, s.mean, s.n, strict=True) if n > 0},
            "vars": {k: float(v) for k, v, n in zip(f, var, s.n, strict=True) if n > 0},
            "weights": {k: float(v) for k, v in zip(f, w, strict=True) if v != 0.0},
            "intercept": float(self.heads.b[0]),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        s = self.scaler
        for i, k in enumerate(self.features):
            n = float(state["counts"].get(k, 0))
            s.n[i] = n
            s.mean[i] = float(state["means"].get(k, 0.0))
            s.m2[i] = float(state["vars"].get(k, 0.0)) * n
            self.heads.W[i, 0] = float(state["weights"].get(k, 0.0))
        s._update()
        self.heads.b[0] = float(state["intercept"])


class OnlineLinear(_Online):
    """Linear regression: ``predict`` is the intercept plus the weighted standardized row."""

    def __init__(self, features: Sequence[str], lr: float = 0.005, intercept_lr: float = 0.005,
                 clip: float = 0.5) -> None:  # fmt: skip
        super().__init__(features, lr, intercept_lr, clip)

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

    logistic = True

    def __init__(self, features: Sequence[str], lr: float = 0.05, clip: float = 1.0) -> None:
        super().__init__(features, lr, lr, clip)
