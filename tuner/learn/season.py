"""Recurring structure: the period of a load that repeats (bursts every few seconds, a
ramp each minute), found online from its autocorrelation, so that the learner can look one
period back and anticipate the next burst instead of reacting to it.

:class:`Seasonality` keeps the last :data:`SPAN` windows of an aggregate load (the mean over a
channel's entities) and every :data:`EVERY` windows looks for its period
(:func:`find_period`): the shortest lag whose autocorrelation is a local peak of at least
:data:`MIN_ACF` and within 90 % of the highest peak. With a period ``P`` the features
``season`` (the load ``P - 1`` windows back: one period before the window being predicted),
``season_delta`` (how the load changed at that point one period ago) and ``season_ahead``
(the mean over the :data:`AHEAD` windows from there: what the horizon looked like one period
ago, when ``P >= AHEAD``) are given; without one they are absent (NaN), as a probe feature
that was not given is.

>>> t = np.arange(256)
>>> find_period(np.where(t % 40 < 10, 2.0, 1.0) + 0.01 * np.sin(t))
40
>>> find_period(np.random.default_rng(0).random(256)) is None
True
"""

from __future__ import annotations

import numpy as np

SPAN = 256  # windows the period is looked for in (25.6 s of 100 ms windows)
EVERY = 25  # windows between looks
MIN_LAG = 4  # the shortest period looked for, windows
MIN_ACF = 0.5  # autocorrelation a period must reach
AHEAD = 10  # season_ahead: the mean over this many windows (the default horizon)


def find_period(series: np.ndarray) -> int | None:
    """The period of ``series`` in samples, or None (no lag of ``MIN_LAG`` up to half its
    length correlates well enough)."""
    x = np.asarray(series, dtype=float)
    n = len(x)
    if n < 4 * MIN_LAG:
        return None
    x = x - x.mean()
    var = float(x @ x)
    if var <= 1e-12 * n:
        return None
    f = np.fft.rfft(x, 2 * n)
    ac = np.fft.irfft(f * np.conj(f))[:n] / var
    ac = ac * n / (n - np.arange(n))  # unbiased: each lag over the pairs it has
    hi = n // 2
    k = np.arange(MIN_LAG, hi - 1)
    peaks = k[(ac[k] >= ac[k - 1]) & (ac[k] >= ac[k + 1]) & (ac[k] >= MIN_ACF)]
    if not len(peaks):
        return None
    best = ac[peaks].max()
    return int(peaks[ac[peaks] >= 0.9 * best][0])


class Seasonality:
    """The period of an aggregate load, looked for every :data:`EVERY` windows.

    >>> s = Seasonality()
    >>> for t in range(300):
    ...     s.push(2.0 if t % 30 < 5 else 1.0)
    >>> s.period
    30
    """

    def __init__(self) -> None:
        self.ring = np.zeros(SPAN)
        self.n = 0  # windows pushed
        self.period: int | None = None

    def push(self, value: float) -> None:
        self.ring[self.n % SPAN] = value
        self.n += 1
        if self.n % EVERY == 0:
            m = min(self.n, SPAN)
            self.period = find_period(np.roll(self.ring, -self.n)[SPAN - m :])


def periods(aggregate: np.ndarray) -> np.ndarray:
    """The period in force after each window of ``aggregate`` (0: none), exactly as
    :class:`Seasonality` finds it window by window (for features built offline).

    >>> p = periods(np.where(np.arange(300) % 30 < 5, 2.0, 1.0))
    >>> int(p[73]), int(p[74]), int(p[299])   # two periods seen by the look at window 75
    (0, 30, 30)
    """
    out = np.zeros(len(aggregate), dtype=np.int64)
    period = 0
    for t in range(len(aggregate)):
        if (t + 1) % EVERY == 0:
            found = find_period(aggregate[max(0, t + 1 - SPAN) : t + 1])
            period = found or 0
        out[t] = period
    return out
