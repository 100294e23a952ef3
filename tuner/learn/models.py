"""The load models the learner can use. Each follows river's ``learn_one`` / ``predict_one``.

- ``last``: the last value; the baseline every model is measured against.
- ``linear``: online linear regression on standardized features (:mod:`tuner.learn.linear`,
  tuner's own, so its state is plain numbers), predicting the *change* of load from the last
  value (so that knowing nothing, it predicts the last value).
- ``tree``: river's Hoeffding tree regressor, also on the change.

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

from typing import Any

from tuner.errors import TunerError
from tuner.learn.linear import OnlineLinear

MODELS = ("linear", "tree", "last")


class LastValue:
    """Predicts that the next window looks like the last one."""

    def learn_one(self, x: dict[str, float], y: float) -> None:
        pass

    def predict_one(self, x: dict[str, float]) -> float:
        return x.get("load", 0.0)


class Residual:
    """Wraps a river regressor to learn ``y - x["load"]`` and add ``x["load"]`` back."""

    def __init__(self, regressor: Any, clip: float = 4.0) -> None:
        self.regressor = regressor
        self.clip = clip

    def learn_one(self, x: dict[str, float], y: float) -> None:
        self.regressor.learn_one(x, y - x.get("load", 0.0))

    def predict_one(self, x: dict[str, float]) -> float:
        y = x.get("load", 0.0) + self.regressor.predict_one(x)
        return min(max(y, 0.0), self.clip)


def make_model(kind: str, seed: int = 0) -> Any:
    """A fresh model of the named kind (one of :data:`MODELS`)."""
    from river import tree

    if kind == "last":
        return LastValue()
    if kind == "linear":
        # a small step and clipped gradients: plain SGD diverged on 64 entities whose
        # scaled features are near-constant early on
        return Residual(OnlineLinear(lr=0.005, intercept_lr=0.005, clip=0.5))
    if kind == "tree":
        return Residual(
            tree.HoeffdingTreeRegressor(
                grace_period=50, leaf_prediction="adaptive", model_selector_decay=0.9
            )
        )
    raise TunerError(f"unknown model {kind!r}", f"choose from {', '.join(MODELS)}")


def make_classifier() -> Any:
    """The hotspot classifier: probability that the next window's load is over threshold."""
    from river import linear_model, optim, preprocessing

    return preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD(0.05)
    )
