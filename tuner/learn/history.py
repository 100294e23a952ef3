"""The features of every entity at once: :class:`BatchHistory` keeps each entity's last loads,
moving averages, share and probe features in numpy arrays, one row per entity, so a window
costs a few array operations whatever the number of entities (the agent's per-window cost
must not grow by a Python loop per entity).

Its features are exactly :class:`tuner.learn.features.History`'s, column by column in
:data:`~tuner.learn.features.FEATURES` order; a probe feature that was not given is NaN
(absent), as it is absent from a ``History`` row.

>>> h = BatchHistory()
>>> rows = h.rows(["a", "b"])
>>> for load in (0.2, 0.4, 0.6):
...     h.push(rows, np.array([load, 1.0]), {"runq_frac": np.array([0.1, 0.0])},
...            np.array([0.25, 0.75]))
>>> X = h.features(rows)
>>> X[0, :4].tolist(), float(X[0, FEATURES.index("lag2")])
([0.6, 0.25, 0.1, nan], 0.2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tuner.learn.features import EXTRA, FAST, FEATURES, LAGS, SLOW
from tuner.learn.season import AHEAD, SPAN, Seasonality

_COL = {name: i for i, name in enumerate(FEATURES)}


class BatchHistory:
    """Per-entity history as arrays; rows are handed out by :meth:`rows` and reused after
    :meth:`forget`."""

    def __init__(self, capacity: int = 16) -> None:
        self.index: dict[str, int] = {}
        self._free: list[int] = []
        self._size = 0
        self.loads = np.zeros((capacity, LAGS + 1))  # oldest first, newest last
        self.count = np.zeros(capacity, dtype=np.int64)  # windows pushed, at most LAGS + 1
        self.ew_fast = np.full(capacity, np.nan)
        self.ew_slow = np.full(capacity, np.nan)
        self.share = np.zeros(capacity)
        self.extra = np.full((capacity, len(EXTRA)), np.nan)
        self.past = np.zeros((capacity, SPAN))  # each row's loads, a ring by its own age
        self.age = np.zeros(capacity, dtype=np.int64)  # windows pushed to the row
        self.season = Seasonality()  # the period of the mean load, if it has one

    def _grow(self) -> None:
        """Twice the rows, the rows in use kept."""
        for name in ("loads", "count", "ew_fast", "ew_slow", "share", "extra", "past", "age"):
            a = getattr(self, name)
            setattr(self, name, np.concatenate([a, np.zeros_like(a)]))

    def rows(self, names: Sequence[str]) -> np.ndarray:
        """The row of each entity, a new (cleared) one for an entity not seen before."""
        out = np.empty(len(names), dtype=np.int64)
        for i, name in enumerate(names):
            row = self.index.get(name)
            if row is None:
                row = self._free.pop() if self._free else self._next()
                self.index[name] = row
                self._clear(row)
            out[i] = row
        return out

    def _next(self) -> int:
        if self._size == len(self.count):
            self._grow()
        self._size += 1
        return self._size - 1

    def _clear(self, row: int) -> None:
        self.loads[row] = 0.0
        self.count[row] = 0
        self.ew_fast[row] = self.ew_slow[row] = np.nan
        self.share[row] = 0.0
        self.extra[row] = np.nan
        self.age[row] = 0

    def forget(self, names: Sequence[str]) -> None:
        """Drop these entities; their rows are reused."""
        for name in names:
            row = self.index.pop(name, None)
            if row is not None:
                self._free.append(row)

    def push(
        self,
        rows: np.ndarray,
        loads: np.ndarray,
        extra: Mapping[str, np.ndarray],
        shares: np.ndarray,
    ) -> None:
        """Record a closed window for ``rows``: loads, probe features (NaN: not given), and
        the table share in force."""
        self.loads[rows, :-1] = self.loads[rows, 1:]
        self.loads[rows, -1] = loads
        self.past[rows, self.age[rows] % SPAN] = loads
        self.age[rows] += 1
        self.season.push(float(loads.mean()) if len(loads) else 0.0)
        self.count[rows] = np.minimum(self.count[rows] + 1, LAGS + 1)
        for ew, a in ((self.ew_fast, FAST), (self.ew_slow, SLOW)):
            old = ew[rows]
            ew[rows] = np.where(np.isnan(old), loads, a * loads + (1 - a) * old)
        for j, name in enumerate(EXTRA):
            self.extra[rows, j] = extra.get(name, np.full(len(rows), np.nan))
        self.share[rows] = shares

    def features(self, rows: np.ndarray) -> np.ndarray:
        """The newest window's features of ``rows``, one row each, :data:`FEATURES` order."""
        X = np.empty((len(rows), len(FEATURES)))
        last = self.loads[rows, -1]
        count = self.count[rows]
        X[:, _COL["load"]] = last
        X[:, _COL["share"]] = self.share[rows]
        for j, name in enumerate(EXTRA):
            X[:, _COL[name]] = self.extra[rows, j]
        for k in range(1, LAGS + 1):
            X[:, _COL[f"lag{k}"]] = np.where(count > k, self.loads[rows, -1 - k], last)
        X[:, _COL["delta"]] = last - X[:, _COL["lag1"]]
        X[:, _COL["ewma_fast"]] = np.where(np.isnan(self.ew_fast[rows]), last, self.ew_fast[rows])
        X[:, _COL["ewma_slow"]] = np.where(np.isnan(self.ew_slow[rows]), last, self.ew_slow[rows])
        X[:, _COL["season"]] = X[:, _COL["season_delta"]] = X[:, _COL["season_ahead"]] = np.nan
        p = self.season.period
        if p:
            age = self.age[rows]
            back = self.past[rows, (age - p) % SPAN]  # the load p - 1 windows back
            X[:, _COL["season"]] = np.where(age >= p, back, np.nan)
            before = self.past[rows, (age - p - 1) % SPAN]
            X[:, _COL["season_delta"]] = np.where(age > p, back - before, np.nan)
            if p >= AHEAD:
                cols = (age[:, None] - p + np.arange(AHEAD)) % SPAN
                ahead = self.past[rows[:, None], cols].mean(axis=1)
                X[:, _COL["season_ahead"]] = np.where(age >= p, ahead, np.nan)
        return X
