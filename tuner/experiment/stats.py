"""How sure an experiment is: a confidence interval for a ratio measured once per round.

Each round runs every arm once, back to back, so a ratio between two arms (``p99_vs_kernel``:
the arm's p99 over the kernel arm's, in that round) is paired: whatever slowed the machine in
that round slowed both. Over rounds, the figure reported is the median of the per-round
ratios, and its interval is a 95 % bootstrap percentile interval over rounds
(:func:`scipy.stats.bootstrap`, 10 000 resamples of the rounds with replacement, the median
of each resample, a fixed seed so a summary can be recomputed exactly).

With few rounds the interval is coarse (with 5 rounds its ends are among the per-round
values), and it says so by being wide: ``kernel-again``, the kernel's placement run a second
time in each round, shows how wide it is when nothing differs (an A/A comparison).

>>> median_ci([0.4, 0.6, 0.5, 0.55, 0.45])
(0.5, [0.4, 0.6])
>>> median_ci([0.7])
(0.7, None)
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 0


def median_ci(values: Sequence[float]) -> tuple[float, list[float] | None]:
    """The median of ``values`` (one per round) and its bootstrap interval ([low, high], or
    None for fewer than two rounds), rounded to 3 digits."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if x.size == 0:
        raise ValueError("no values")
    median = round(float(statistics.median(x.tolist())), 3)
    if x.size < 2:
        return median, None
    if np.all(x == x[0]):
        return median, [median, median]
    from scipy.stats import bootstrap

    with warnings.catch_warnings():  # few rounds: scipy warns that the interval may be coarse
        warnings.simplefilter("ignore")
        res = bootstrap(
            (x,),
            np.median,
            confidence_level=CONFIDENCE,
            n_resamples=RESAMPLES,
            method="percentile",
            random_state=np.random.default_rng(SEED),
        )
    low, high = res.confidence_interval
    return median, [round(float(low), 3), round(float(high), 3)]


def ci_text(value: float | None, ci: Sequence[float] | None) -> str:
    """``0.5 [0.45, 0.55]``, or the value alone without an interval.

    >>> ci_text(0.5, [0.45, 0.55]), ci_text(0.5, None), ci_text(None, None)
    ('0.5 [0.45, 0.55]', '0.5', '-')
    """
    if value is None:
        return "-"
    text = f"{value:.3g}"
    return f"{text} [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else text
