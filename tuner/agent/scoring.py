"""Judging the agent as it runs: the regression guard, and shadow scoring of its decisions.

- :class:`Guard`: in active mode, the hottest worker's load is compared with its level during
  the last shadow period; too much worse for too long and the agent goes back to shadow.
- :class:`ShadowScores`: in shadow mode, each window's decision is scored one window later
  against the load that occurred: were the predicted hotspots the real ones (precision,
  recall), and how far were the chosen shares from the ones that would have balanced it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from tuner.policy.shares import SharePolicy, distance
from tuner.window import ChannelWindow


@dataclass
class Guard:
    """Regression guard: trips after ``windows`` consecutive active windows whose pressure
    is above the shadow level times ``1 + margin``.

    >>> g = Guard(margin=0.5, windows=2)
    >>> [g.observe("shadow", p) for p in (0.4, 0.4)]
    [False, False]
    >>> [g.observe("active", p) for p in (0.7, 0.7)]
    [False, True]
    """

    margin: float = 0.25
    windows: int = 10
    enabled: bool = True
    shadow_level: deque = field(default_factory=lambda: deque(maxlen=200), init=False)
    worse: int = field(default=0, init=False)
    reason: str = field(default="", init=False)
    trips: int = field(default=0, init=False)  # times it has tripped since the start

    def observe(self, mode: str, pressure: float) -> bool:
        """Feed one window; True when the guard trips (active mode only)."""
        if mode == "shadow":
            self.shadow_level.append(pressure)
            self.worse = 0
            return False
        if not self.enabled or len(self.shadow_level) < 2:
            return False
        level = sum(self.shadow_level) / len(self.shadow_level)
        if pressure > level * (1 + self.margin) + 1e-9:
            self.worse += 1
        else:
            self.worse = 0
        if self.worse >= self.windows:
            self.reason = (
                f"hottest worker load {pressure:.2f} above shadow level {level:.2f} "
                f"+{self.margin:.0%} for {self.worse} windows"
            )
            self.worse = 0
            self.trips += 1
            return True
        return False

    def text(self) -> str:
        """The guard's state, for ``tuner status``."""
        if not self.enabled:
            return "disabled"
        if self.reason:
            return self.reason
        return "armed" if self.shadow_level else "no shadow period yet"


@dataclass
class ShadowScores:
    """Shadow decisions scored against the next window's load.

    >>> from tuner.learn.online import Prediction
    >>> from tuner.window import EntityState, TableOutcome
    >>> hot = EntityState("w0", 0.9, {}, Prediction("w0", 0.95, 0.9, 0.9), decided=0.1)
    >>> cool = EntityState("w1", 0.2, {}, Prediction("w1", 0.2, 0.2, 0.0), decided=0.9)
    >>> decided = TableOutcome(False, True, (0.1, 0.9), None, "")
    >>> prev = ChannelWindow("workers", (hot, cool), decided)
    >>> s = ShadowScores()
    >>> s.score(prev, {"w0": 0.9, "w1": 0.3}, threshold=0.8, policy=SharePolicy())
    >>> s.decisions, s.precision(), s.recall()
    (1, 1.0, 1.0)
    """

    decisions: int = 0
    hot_tp: int = 0
    hot_fp: int = 0
    hot_fn: int = 0
    gap: float = 0.0

    def score(
        self,
        previous: ChannelWindow | None,
        loads: dict[str, float],
        threshold: float,
        policy: SharePolicy,
    ) -> None:
        """Score ``previous`` (the workers' last window, when shadow mode decided there)
        against this window's ``loads``."""
        if previous is None or previous.outcome is None or not previous.outcome.shares:
            return
        self.decisions += 1
        by_entity = {e.entity: e for e in previous.entities}
        for entity, load in loads.items():
            before = by_entity.get(entity)
            if before is None or before.prediction is None:
                continue
            p = before.prediction
            said, was = p.p_hot > 0.5 or p.load > threshold, load > threshold
            self.hot_tp += said and was
            self.hot_fp += said and not was
            self.hot_fn += was and not said
        if len(previous.outcome.shares) == len(loads):
            balanced = policy.target_shares(list(loads.values()))
            self.gap += distance(balanced, previous.outcome.shares)

    def precision(self) -> float | None:
        n = self.hot_tp + self.hot_fp
        return round(self.hot_tp / n, 4) if n else None

    def recall(self) -> float | None:
        n = self.hot_tp + self.hot_fn
        return round(self.hot_tp / n, 4) if n else None

    def summary(self) -> dict:
        """For ``tuner status``."""
        return {
            "decisions": self.decisions,
            "hotspot_precision": self.precision(),
            "hotspot_recall": self.recall(),
            "mean_gap_to_balanced": round(self.gap / max(1, self.decisions), 4),
        }
