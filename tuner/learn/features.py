"""Per-entity feature history: the last loads, moving averages and the share last given.

Load is a fraction of one CPU over a window: ``(on-CPU time + run-queue wait) / window``,
so a worker that is busy or waiting to run for the whole window has load 1.

>>> h = History()
>>> for load in (0.2, 0.4, 0.6):
...     h.push(load, {"runq_frac": 0.1}, share=0.25)
>>> x = h.features()
>>> x["load"], x["lag1"], x["lag2"], round(x["delta"], 2)
(0.6, 0.4, 0.2, 0.2)
>>> sorted(x)[:4]
['delta', 'ewma_fast', 'ewma_slow', 'lag1']
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from tuner.learn.season import AHEAD, SPAN

LAGS = 3
FAST, SLOW = 0.5, 0.1  # EWMA weights of the newest window
# per-window probe features the agent adds (see tuner.agent.loop); live_load only with
# agent.sockets (tuner.agent.sockets), absent otherwise
EXTRA = ("runq_frac", "live_load")
# one period back (tuner.learn.season), when the channel's load has a period; absent otherwise:
# the load one period before the window predicted, its change at that point, and the mean of
# the AHEAD windows from there
SEASON = ("season", "season_delta", "season_ahead")
# The feature schema, in the order an offline model takes them (tuner.learn.boost builds
# the same values from a trace; a saved model records the list it was trained on, predicts
# from those columns, and is refused when it wants one this list lacks)
FEATURES = (
    "load",
    "share",
    *EXTRA,
    *(f"lag{k}" for k in range(1, LAGS + 1)),
    "delta",
    "ewma_fast",
    "ewma_slow",
    *SEASON,
)


@dataclass
class History:
    """What the learner remembers of one entity."""

    loads: deque = field(default_factory=lambda: deque(maxlen=SPAN))
    ewma_fast: float | None = None
    ewma_slow: float | None = None
    extra: dict[str, float] = field(default_factory=dict)
    share: float = 0.0

    def push(self, load: float, extra: dict[str, float], share: float) -> None:
        """Record a closed window: its load, probe features, and the table share in force."""
        self.loads.append(load)
        self.ewma_fast = (
            load if self.ewma_fast is None else FAST * load + (1 - FAST) * self.ewma_fast
        )
        self.ewma_slow = (
            load if self.ewma_slow is None else SLOW * load + (1 - SLOW) * self.ewma_slow
        )
        self.extra = dict(extra)
        self.share = share

    @property
    def last(self) -> float:
        return self.loads[-1] if self.loads else 0.0

    def features(self, period: int | None = None) -> dict[str, float]:
        """Features of the newest window, as river takes them (``dict[str, float]``);
        ``period``: the channel's, when its load has one (:mod:`tuner.learn.season`)."""
        loads = list(self.loads)
        last = loads[-1] if loads else 0.0
        x = {"load": last, "share": self.share, **self.extra}
        for k in range(1, LAGS + 1):
            x[f"lag{k}"] = loads[-1 - k] if len(loads) > k else last
        x["delta"] = last - x["lag1"]
        x["ewma_fast"] = self.ewma_fast if self.ewma_fast is not None else last
        x["ewma_slow"] = self.ewma_slow if self.ewma_slow is not None else last
        if period and len(loads) >= period:
            x["season"] = loads[-period]
            if len(loads) > period:
                x["season_delta"] = loads[-period] - loads[-period - 1]
            if period >= AHEAD:
                ahead = loads[-period : len(loads) - period + AHEAD]
                x["season_ahead"] = sum(ahead) / AHEAD
        return x
