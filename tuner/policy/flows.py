"""Hot flows kept away from predicted hotspots: per-flow overrides beside the table.

A table decides shares of *new* traffic by slot; it cannot help when one flow alone carries a
large part of the load and its slot happens to point at a worker predicted hot. In a UDP
reuseport group every datagram is placed afresh and a flow's hash is stable, so such a flow
can be pinned to a socket (the sk_reuseport program's ``overrides`` map).

Each window :meth:`HotFlowPolicy.decide` takes the datagrams per flow hash counted in the
kernel, the table in force and the predicted load per target:

1. datagrams per flow are smoothed over windows (an exponential average with weight
   ``alpha`` on the newest window, so a flow of a few datagrams a window is still seen); a
   flow is *hot* when its average is at least ``share`` of the group's (and at least
   ``min_hits`` a window); its load is estimated as that fraction of the predicted total;
2. the hot flows' estimated load is taken off the targets they are on now (their override,
   else their slot's target), which leaves each target's load without them;
3. hot flows, heaviest first, go to the target with the least load so far; a flow already
   pinned stays unless moving gains more than ``margin`` (of a CPU), so pins do not flap;
4. a pin outlives its flow's last hot window by ``hold_windows`` windows, then is dropped.

Two hot flows whose slots both point at target 0, the predicted hotspot: one is moved.

>>> p = HotFlowPolicy(share=0.2, min_hits=10, alpha=1.0)
>>> table = [0] * 256
>>> d = p.decide({7: 400, 8: 400, 9: 50}, table, predicted=[0.9, 0.1])
>>> d.overrides, d.hot, d.moved
({7: 0, 8: 1}, [7, 8], 2)
>>> p.decide({7: 400, 8: 400, 9: 50}, table, predicted=[0.5, 0.5]).overrides  # no flapping
{7: 0, 8: 1}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tuner.errors import TunerError
from tuner.policy.shares import SLOTS

MAX_OVERRIDES = 4096  # the size of the kernel's overrides map


@dataclass(frozen=True)
class FlowDecision:
    """One window's overrides (flow hash -> target) and the hot flows behind them."""

    overrides: dict[int, int]
    hot: list[int]
    moved: int
    why: str


@dataclass
class HotFlowPolicy:
    """Pins hot flows to the targets with the most predicted room (see the module text)."""

    share: float = 0.1
    min_hits: float = 2.0
    hold_windows: int = 50
    margin: float = 0.1
    alpha: float = 0.3
    overrides: dict[int, int] = field(default_factory=dict, init=False)
    _rate: dict[int, float] = field(default_factory=dict, init=False, repr=False)
    _last_hot: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    _window: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise TunerError(f"hot flow share must be in [0, 1]; got {self.share}")
        if self.hold_windows < 0 or self.min_hits <= 0 or not 0 < self.alpha <= 1:
            raise TunerError("hot flows need hold_windows >= 0, min_hits > 0, 0 < alpha <= 1")

    @property
    def enabled(self) -> bool:
        return self.share > 0

    def decide(
        self, hits: dict[int, int], table: Sequence[int], predicted: Sequence[float]
    ) -> FlowDecision:
        """Overrides for the next window from this window's datagrams per flow hash."""
        self._window += 1
        targets = len(predicted)
        rate = self._smooth(hits)
        total = sum(rate.values())
        hot = sorted(
            (h for h, n in rate.items() if n >= self.min_hits and n >= self.share * total),
            key=lambda h: -rate[h],
        )
        total_load = sum(predicted)
        flow_load = {h: total_load * rate[h] / total for h in hot}

        def placed(h: int) -> int:
            t = self.overrides.get(h, table[h % SLOTS])
            return t if 0 <= t < targets else table[h % SLOTS]

        load = list(predicted)
        for h in hot:
            load[placed(h)] = max(0.0, load[placed(h)] - flow_load[h])
        moved = 0
        for h in hot:
            cur = placed(h)
            best = min(range(targets), key=lambda t: (load[t], t))
            go = best if load[cur] > load[best] + self.margin else cur
            moved += self.overrides.get(h) != go
            self.overrides[h] = go
            load[go] += flow_load[h]
            self._last_hot[h] = self._window
        for h in list(self.overrides):
            if self._window - self._last_hot.get(h, 0) > self.hold_windows:
                del self.overrides[h]
                self._last_hot.pop(h, None)
        while len(self.overrides) > MAX_OVERRIDES:  # oldest pins go first
            h = min(self.overrides, key=lambda k: self._last_hot.get(k, 0))
            del self.overrides[h]
            self._last_hot.pop(h, None)
        why = (
            f"{len(hot)} hot flow(s), {moved} placed, {len(self.overrides)} pinned"
            if hot or self.overrides
            else "no hot flows"
        )
        return FlowDecision(dict(self.overrides), hot, moved, why)

    def _smooth(self, hits: dict[int, int]) -> dict[int, float]:
        """Per-flow datagrams a window, averaged over windows; flows that faded are dropped."""
        a = self.alpha
        rate = {h: (1 - a) * r for h, r in self._rate.items()}
        for h, n in hits.items():
            rate[h] = rate.get(h, 0.0) + a * n
        self._rate = {h: r for h, r in rate.items() if r >= 0.05}
        return self._rate

    def reset(self) -> None:
        """Forget every pin and rate (the agent fell back to kernel defaults)."""
        self.overrides.clear()
        self._last_hot.clear()
        self._rate.clear()
