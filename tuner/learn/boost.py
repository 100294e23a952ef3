"""Offline training: from recorded traces to a saved model the agent can load.

::

    traces --> feature matrix (the live agent's features, built from the past only)
           --> time-ordered split: train on the earlier windows, score on the later ones
           --> gradient boosted trees (LightGBM, through its scikit-learn interface) on the
               change of load, read out into tuner's own TreeEnsemble
           --> warm start: the online residual model replays the end of the training period
           --> models/NAME/{model.json, trees.npz, online.json}

A saved model holds no pickled code: ``model.json`` (metadata, feature schema, metrics) and
``online.json`` are JSON, ``trees.npz`` holds only numeric arrays (read with
``allow_pickle=False``), and the trees are evaluated by :class:`TreeEnsemble` in numpy.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> w = np.arange(600)
>>> loads = np.stack([0.5 + 0.3 * np.sin(w / 5 + k) + rng.normal(0, 0.05, w.size)
...                   for k in range(4)], axis=1)
>>> X, y, win = feature_matrix(loads, np.full_like(loads, 0.25), np.zeros_like(loads))
>>> X.shape, y.shape, list(FEATURES)[:3]
((2396, 13), (2396,), ['load', 'share', 'runq_frac'])
>>> train, test, split = time_split(win, holdout=0.25)
>>> model, metrics = fit(X, y, train, test, max_iter=50)
>>> metrics["holdout_model_mae"] < metrics["holdout_baseline_mae"]
True
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tuner.errors import TunerError
from tuner.learn.features import FAST, FEATURES, LAGS, SLOW
from tuner.learn.linear import OnlineLinear
from tuner.learn.modelfile import SavedModel
from tuner.learn.models import RowApi
from tuner.learn.season import AHEAD, periods
from tuner.learn.trees import TreeEnsemble

WARM_START_ROWS = 20_000  # rows of the end of the training period replayed online
ONLINE = {"lr": 0.005, "intercept_lr": 0.005, "clip": 0.5}  # the residual model's steps


def _ewma(x: np.ndarray, alpha: float) -> np.ndarray:
    """EWMA down axis 0 starting at the first value, as :class:`History` computes it."""
    from scipy.signal import lfilter

    zi = (1 - alpha) * x[:1]
    return lfilter([alpha], [1, -(1 - alpha)], x, axis=0, zi=zi)[0]


def _season(loads: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``season``, ``season_delta`` and ``season_ahead`` of every window, with the period
    found as the live learner finds it, window by window, from the mean load (NaN: none)."""
    n = len(loads)
    p = periods(loads.mean(axis=1))
    t = np.arange(n)
    back = loads[np.clip(t - p + 1, 0, n - 1)]  # the load p - 1 windows back
    before = loads[np.clip(t - p, 0, n - 1)]
    has = (p > 0)[:, None]
    ok = (t - p + 1 >= 0)[:, None]
    season = np.where(has & ok, back, np.nan)
    delta = np.where(has & (t - p >= 0)[:, None], back - before, np.nan)
    idx = np.clip(t[:, None] - p[:, None] + 1 + np.arange(AHEAD), 0, n - 1)
    ahead = loads[idx].mean(axis=1)
    return season, delta, np.where(has & ok & (p >= AHEAD)[:, None], ahead, np.nan)


def feature_matrix(
    loads: np.ndarray, shares: np.ndarray, runq: np.ndarray, live: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (window, entity) of :data:`FEATURES` and the next window's load as the target.

    Inputs are windows x entities arrays. Each row's features use that window and earlier
    ones only, exactly as :class:`tuner.learn.features.History` does live; the last window,
    which has no next one, gives no row. ``live`` (``live_load``) is NaN where it was not
    recorded (``agent.sockets`` off), as it is absent live. Returns ``(X, y, window_of_row)``.
    """
    n, m = loads.shape
    if n < 2:
        return np.empty((0, len(FEATURES))), np.empty(0), np.empty(0, dtype=np.int64)
    loads = np.nan_to_num(loads, nan=0.0)
    live = np.full_like(loads, np.nan) if live is None else live
    cols = {"load": loads, "share": shares, "runq_frac": runq, "live_load": live}
    for k in range(1, LAGS + 1):
        lag = np.empty_like(loads)
        lag[k:] = loads[:-k]
        lag[:k] = loads[:k]  # too early for this lag: the newest load stands in
        cols[f"lag{k}"] = lag
    cols["delta"] = loads - cols["lag1"]
    cols["ewma_fast"] = _ewma(loads, FAST)
    cols["ewma_slow"] = _ewma(loads, SLOW)
    cols["season"], cols["season_delta"], cols["season_ahead"] = _season(loads)
    X = np.stack([cols[f][:-1].reshape(-1) for f in FEATURES], axis=1)
    y = loads[1:].reshape(-1)
    win = np.repeat(np.arange(n - 1), m)
    return X, y, win


def time_split(window: np.ndarray, holdout: float) -> tuple[np.ndarray, np.ndarray, int]:
    """(train rows, held-out rows, split window) for rows numbered by ``window``.

    Rows from the split window on are held out; the row just before it is dropped, because
    its target is the first held-out load. No training row sees a held-out outcome.

    >>> tr, te, s = time_split(np.arange(10), 0.3)
    >>> s, np.flatnonzero(tr).tolist(), np.flatnonzero(te).tolist()
    (7, [0, 1, 2, 3, 4, 5], [7, 8, 9])
    """
    last = int(window.max()) if len(window) else 0
    split = last + 2 if holdout <= 0 else last + 1 - max(1, round((last + 1) * holdout))
    return window < split - 1, window >= split, split


def fit(
    X: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    max_iter: int = 200,
    threshold: float = 0.8,
    seed: int = 0,
) -> tuple[TreeEnsemble, dict[str, Any]]:
    """Train the trees on the ``train`` rows, score them on the ``test`` rows (boolean masks,
    from :func:`time_split`). The trees learn the change of load (target minus last load).

    The trees are LightGBM's (through its scikit-learn interface), read out through its public
    ``dump_model`` into tuner's own :class:`~tuner.learn.trees.TreeEnsemble`, and checked to
    predict what LightGBM predicts before they are kept."""
    import lightgbm

    if train.sum() < 20:
        raise TunerError(
            f"too few windows to train on ({int(train.sum())} rows before the held-out part)",
            "record for longer",
        )
    # absolute error: the agent is judged on MAE, and window loads have heavy tails; small,
    # well-filled leaves: per-window loads are noisy and 31-leaf trees fit the noise
    est = lightgbm.LGBMRegressor(
        objective="l1",
        n_estimators=max_iter,
        learning_rate=0.05,
        num_leaves=15,
        min_child_samples=50,
        reg_lambda=1.0,
        random_state=seed,
        deterministic=True,
        force_row_wise=True,
        n_jobs=1,
        verbose=-1,
    )
    t0 = time.monotonic()
    load = X[:, 0]
    X_train = X[train]
    X_train[:, np.isnan(X_train).all(axis=0)] = 0.0  # never recorded: a constant, not split on
    est.fit(X_train, y[train] - load[train])
    fit_s = time.monotonic() - t0
    trees = TreeEnsemble.from_lightgbm(est.booster_.dump_model())
    check = X[train][:2000]
    if not np.allclose(trees.predict(check), est.predict(check), atol=1e-6):
        raise TunerError(
            f"the trees read from LightGBM {lightgbm.__version__} do not predict what it does",
            "use the LightGBM versions pyproject.toml allows",
        )
    metrics: dict[str, Any] = {
        "train_rows": int(train.sum()),
        "holdout_rows": int(test.sum()),
        "fit_s": round(fit_s, 3),
    }
    if test.any():
        pred = np.clip(load[test] + trees.predict(X[test]), 0.0, None)
        metrics.update(scores(pred, load[test], y[test], threshold, "holdout_"))
    return trees, metrics


def scores(pred: np.ndarray, base: np.ndarray, actual: np.ndarray, thr: float, prefix: str):
    """MAE and hotspot precision / recall of ``pred`` and of the last-value ``base``."""
    out: dict[str, float] = {}
    hot = actual > thr
    for name, p in (("model", pred), ("baseline", base)):
        said = p > thr
        tp = int((said & hot).sum())
        out[f"{prefix}{name}_mae"] = round(float(np.abs(p - actual).mean()), 6)
        out[f"{prefix}{name}_precision"] = round(tp / max(1, int(said.sum())), 4)
        out[f"{prefix}{name}_recall"] = round(tp / max(1, int(hot.sum())), 4)
    return out


# -- the model the agent runs -----------------------------------------------------------------
class OfflineModel(RowApi):
    """The trees' prediction, corrected online by a small linear model of their residual
    (:class:`~tuner.learn.linear.OnlineLinear`). A :class:`~tuner.learn.models.LoadModel`:
    rows in :data:`FEATURES` order; the trees read the columns they were trained on."""

    def __init__(
        self,
        trees: TreeEnsemble,
        online_state: dict[str, Any] | None = None,
        features: list[str] | None = None,
        version: str = "",
    ) -> None:
        self.trees = trees
        self.version = version  # of the saved model it came from ("" when not saved)
        # the columns the trees were trained on, in order (a model saved before a feature
        # was added lacks it and goes on without it)
        self.features = list(FEATURES if features is None else features)
        self._cols = [FEATURES.index(f) for f in self.features]
        self.online = OnlineLinear(FEATURES, **ONLINE)
        if online_state:
            self.online.set_state(online_state)

    def base_many(self, X: np.ndarray) -> np.ndarray:
        """The trees' prediction alone (no online correction): offline evaluation."""
        return X[:, 0] + self.trees.predict(X[:, self._cols])

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        return np.clip(self.base_many(X) + self.online.predict_many(X), 0.0, 4.0)

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        self.online.learn_many(X, y - self.base_many(X))

    @classmethod
    def from_saved(cls, saved: SavedModel) -> OfflineModel:
        """A fresh, warm-started model from a loaded model directory."""
        return cls(saved.trees, saved.online, saved.meta["features"], saved.meta["version"])


def warm_start(
    trees: TreeEnsemble, X: np.ndarray, y: np.ndarray, rows_per_window: int = 4
) -> dict[str, Any]:
    """Replay rows (in time order, ``rows_per_window`` at a time, as the agent learns them)
    through the online residual model; return its state."""
    m = OfflineModel(trees)
    residual = y - m.base_many(X)
    for start in range(0, len(X), rows_per_window):
        part = slice(start, start + rows_per_window)
        m.online.learn_many(X[part], residual[part])
    return m.online.state()
