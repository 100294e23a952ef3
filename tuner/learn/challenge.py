"""A new model on trial beside the one in use: it predicts every window from the same
features, is scored on the same outcomes and learns from them as it would live, but decides
nothing. After ``windows`` scored windows the verdict is in: adopt it when its error is no
larger than the model's in use, keep the old one otherwise.

>>> import numpy as np
>>> class Const:
...     def __init__(self, c): self.c = c
...     def predict_many(self, X): return np.full(len(X), self.c)
...     def learn_many(self, X, y): pass
>>> ch = Challenge(Const(0.5), "sha256:new", windows=3)
>>> X = np.zeros((2, 4))
>>> for _ in range(3):
...     ch.score(ch.predict(X), current=np.array([0.9, 0.9]), X=X, actual=np.array([0.5, 0.6]))
>>> ch.done(), ch.better(), ch.result()["challenger_mae"]
(True, True, 0.05)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tuner.learn.models import CLIP, LoadModel


class Challenge:
    """``model`` (version ``version``) on trial for ``windows`` scored windows."""

    def __init__(self, model: LoadModel, version: str, windows: int = 100) -> None:
        self.model = model
        self.version = version
        self.windows = max(1, int(windows))
        self.scored = 0
        self.rows = 0
        self.err = np.zeros(2)  # challenger's, current's absolute errors summed

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The challenger's prediction for these feature rows."""
        return np.clip(self.model.predict_many(X), 0.0, CLIP)

    def score(
        self, mine: np.ndarray, current: np.ndarray, X: np.ndarray, actual: np.ndarray
    ) -> None:
        """One window's outcome: both predictions scored, the challenger learns from it
        (once the trial is over, until it is settled: nothing)."""
        if self.done():
            return
        self.err += (np.abs(mine - actual).sum(), np.abs(current - actual).sum())
        self.model.learn_many(X, actual)
        self.scored += 1
        self.rows += len(actual)

    def done(self) -> bool:
        return self.scored >= self.windows

    def better(self) -> bool:
        """The challenger's error is no larger than the model's in use."""
        return bool(self.err[0] <= self.err[1])

    def result(self) -> dict[str, Any]:
        """Windows scored and each side's mean absolute error (per entity and window)."""
        n = max(1, self.rows)
        return {
            "version": self.version,
            "windows": self.scored,
            "challenger_mae": round(float(self.err[0]) / n, 6),
            "current_mae": round(float(self.err[1]) / n, 6),
        }
