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

from tuner.learn.features import EXTRA, FAST, FEATURES, LAGS, SEASON, SLOW
from tuner.learn.season import AHEAD, SPAN, Seasonality

_COL = {name: i for i, name in enumerate(FEATURES)}


def _span(names: Sequence[str]) -> slice:
    """The columns of ``names``, which :data:`FEATURES` must hold side by side, in order."""
    first = _COL[names[0]]
    if [_COL[n] for n in names] != list(range(first, first + len(names))):
        raise AssertionError(f"FEATURES must hold {names} side by side")
    return slice(first, first + len(names))


_EXTRA = _span(EXTRA)
_LAGS = _span([f"lag{k}" for k in range(1, LAGS + 1)])
_EWMA = _span(["ewma_fast", "ewma_slow"])
_SEASON = _span(SEASON)
_K = np.arange(1, LAGS + 1)  # lag k needs more than k windows pushed
_EW = np.array([FAST, SLOW])  # the newest window's weight in each moving average
_BACK = np.arange(-1, AHEAD)  # the season's window offsets from one period back


class BatchHistory:
    """Per-entity history as arrays; rows are handed out by :meth:`rows` and reused after
    :meth:`forget`."""

    def __init__(self, capacity: int = 16) -> None:
        self.index: dict[str, int] = {}
        self._free: list[int] = []
        self._size = 0
        self.loads = np.zeros((capacity, LAGS + 1))  # oldest first, newest last
        self.count = np.zeros(capacity, dtype=np.int64)  # windows pushed, at most LAGS + 1
        self.ew = np.full((capacity, 2), np.nan)  # the fast and the slow moving average
        self.share = np.zeros(capacity)
        self.extra = np.full((capacity, len(EXTRA)), np.nan)
        self.past = np.zeros((capacity, SPAN))  # each row's loads, a ring by its own age
        self.age = np.zeros(capacity, dtype=np.int64)  # windows pushed to the row
        self.season = Seasonality()  # the period of the mean load, if it has one
        self._names: list[str] | None = None  # the names rows() was last given, its answer
        self._rows = np.empty(0, dtype=np.int64)
        self._slice: slice | None = None  # those rows as a slice, when they are 0 .. n-1

    def _grow(self) -> None:
        """Twice the rows, the rows in use kept."""
        for name in ("loads", "count", "ew", "share", "extra", "past", "age"):
            a = getattr(self, name)
            setattr(self, name, np.concatenate([a, np.zeros_like(a)]))

    def rows(self, names: Sequence[str]) -> np.ndarray:
        """The row of each entity, a new (cleared) one for an entity not seen before. The
        same names as last time give the same array back."""
        if names == self._names:
            return self._rows
        out = np.empty(len(names), dtype=np.int64)
        for i, name in enumerate(names):
            row = self.index.get(name)
            if row is None:
                row = self._free.pop() if self._free else self._next()
                self.index[name] = row
                self._clear(row)
            out[i] = row
        n = len(out)
        self._names, self._rows = list(names), out
        self._slice = slice(0, n) if np.array_equal(out, np.arange(n)) else None
        return out

    def at(self, rows: np.ndarray) -> np.ndarray | slice:
        """``rows`` as an index: the slice ``0:n`` when they are the rows ``0 .. n-1`` in
        order (the common case: the same entities window after window), which reads and
        writes in place, where an array of rows copies (several times the cost for a small
        group). Only for indexing rows alone, not beside another array index.

        >>> h = BatchHistory()
        >>> h.at(h.rows(["a", "b"])), h.at(h.rows(["b", "a"])).tolist()
        (slice(0, 2, None), [1, 0])
        """
        return self._slice if rows is self._rows and self._slice is not None else rows

    def _next(self) -> int:
        if self._size == len(self.count):
            self._grow()
        self._size += 1
        return self._size - 1

    def _clear(self, row: int) -> None:
        self.loads[row] = 0.0
        self.count[row] = 0
        self.ew[row] = np.nan
        self.share[row] = 0.0
        self.extra[row] = np.nan
        self.age[row] = 0

    def forget(self, names: Sequence[str]) -> None:
        """Drop these entities; their rows are reused."""
        self._names = None
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
        n, ix = len(rows), self.at(rows)
        L = self.loads[ix]  # the rows' loads, shifted by one window
        L[:, :-1] = L[:, 1:]
        L[:, -1] = loads
        self.loads[ix] = L
        age = self.age[ix]
        self.past[rows, age % SPAN] = loads
        self.age[ix] = age + 1
        self.season.push(float(np.add.reduce(loads)) / n if n else 0.0)
        count = self.count[ix]
        least = int(np.minimum.reduce(count)) if n else LAGS + 1
        if least <= LAGS:  # counted up to LAGS + 1 windows, where they stay
            self.count[ix] = np.minimum(count + 1, LAGS + 1)
        old = self.ew[ix]  # the fast and the slow average side by side
        y = loads[:, None]
        new = _EW * y + (1.0 - _EW) * old
        self.ew[ix] = new if least else np.where(np.isnan(old), y, new)  # a new row: its load
        E = np.full((n, len(EXTRA)), np.nan)
        for j, name in enumerate(EXTRA):
            if (col := extra.get(name)) is not None:
                E[:, j] = col
        self.extra[ix] = E
        self.share[ix] = shares

    def features(self, rows: np.ndarray) -> np.ndarray:
        """The newest window's features of ``rows``, one row each, :data:`FEATURES` order."""
        X = np.empty((len(rows), len(FEATURES)))
        ix = self.at(rows)
        L = self.loads[ix]
        last = L[:, -1]
        X[:, _COL["load"]] = last
        X[:, _COL["share"]] = self.share[ix]
        X[:, _EXTRA] = self.extra[ix]
        count = self.count[ix]
        if len(rows) and np.minimum.reduce(count) > LAGS:  # the common case: no row is new
            X[:, _LAGS] = L[:, -2::-1]
            X[:, _EWMA] = self.ew[ix]
        else:  # lag k is the load k windows back, the newest where there is none yet
            X[:, _LAGS] = np.where(count[:, None] > _K, L[:, -2::-1], last[:, None])
            ew = self.ew[ix]
            X[:, _EWMA] = np.where(np.isnan(ew), last[:, None], ew)
        X[:, _COL["delta"]] = last - X[:, _COL["lag1"]]
        p = self.season.period
        S = X[:, _SEASON]  # a view: written in place
        if not p or not len(rows):
            S[:] = np.nan
            return X
        age = self.age[ix]
        # each row's loads from p + 1 windows back (before), p back (back) on to AHEAD - 1
        # windows after that: one gather for the three season features
        W = self.past[rows[:, None], (age[:, None] - p + _BACK) % SPAN]
        S[:, 0] = W[:, 1]  # the load p - 1 windows before the one predicted
        S[:, 1] = W[:, 1] - W[:, 0]
        S[:, 2] = np.add.reduce(W[:, 1:], axis=1) / AHEAD if p >= AHEAD else np.nan
        if np.minimum.reduce(age) <= p:  # rows younger than a period lack some of them
            S[age < p] = np.nan
            S[age == p, 1] = np.nan
        return X
