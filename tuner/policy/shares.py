"""From predicted load to an indirection table: spare capacity decides the shares.

::

    predicted load --> spare = capacity - load --> target shares --> bounded step --> table
       per target      (hot targets get ~0)       (>= min_share)    (hysteresis)   256 slots

Each target's share of new connections (or new flows) is proportional to its predicted spare
capacity, so traffic goes where there is room, and a target predicted hot gets only the
minimum share. With ``fill`` set (the load one window's new connections bring), the shares
instead *water-fill*: new connections go to the emptiest targets first, up to a common level,
which evens out skewed load much faster than proportional shares when connections differ in
weight and are placed only once. Two brakes keep decisions from flapping: a change smaller
than ``hysteresis`` (half the L1 distance between share vectors) is not made at all, and no
share moves by more than ``max_step`` per window (the step is taken along the line from the
current shares to the wanted ones, so they still sum to 1). Slots are reassigned with as few moves
as possible, so a flow table keyed by slot sees little churn.

>>> p = SharePolicy(min_share=0.05, max_step=1.0, hysteresis=0.0)
>>> d = p.decide([0.9, 0.3, 0.3, 0.3])
>>> [round(s, 2) for s in d.shares]
[0.05, 0.32, 0.32, 0.32]
>>> from collections import Counter
>>> sorted(Counter(d.table).items())
[(0, 13), (1, 81), (2, 81), (3, 81)]
>>> p = SharePolicy(min_share=0.05, max_step=1.0, hysteresis=0.0, fill=0.1)
>>> [round(s, 2) for s in p.decide([0.9, 0.5, 0.3, 0.35]).shares]
[0.05, 0.05, 0.67, 0.23]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tuner.errors import TunerError
from tuner.table import SLOTS, floor_slots, table_for

__all__ = ["SLOTS", "SharePolicy", "TableDecision", "cpu_spare", "distance", "table_for"]


@dataclass(frozen=True)
class TableDecision:
    """What the policy chose for one window, and why."""

    shares: list[float]
    table: list[int]
    changed: bool
    why: str


def _bounded(shares: list[float], floor: float) -> list[float]:
    """Raise every share to ``floor``, take the excess from the others, keep the sum 1."""
    n = len(shares)
    floor = min(floor, 1.0 / n)
    s = [max(x, 0.0) for x in shares]
    total = sum(s) or 1.0
    s = [x / total for x in s]
    for _ in range(n):
        low = [i for i, x in enumerate(s) if x < floor - 1e-12]
        if not low:
            break
        need = sum(floor - s[i] for i in low)
        rich = [i for i, x in enumerate(s) if x > floor]
        pool = sum(s[i] - floor for i in rich)
        for i in low:
            s[i] = floor
        for i in rich:
            s[i] -= need * (s[i] - floor) / pool if pool else 0.0
    return s


def water_fill(spare: Sequence[float], fill: float) -> list[float]:
    """Shares that pour ``fill`` (load new connections will bring) into the targets with the
    most spare room first, up to a common level: the share of target *i* is
    ``max(spare_i - t, 0) / fill``, with the threshold ``t`` chosen so the shares sum to 1.
    A small fill sends nearly everything to the emptiest target; a fill equal to the total
    spare room gives shares in proportion to spare room (``t = 0``); a larger one, more even
    shares. ``fill <= 0``: in proportion to spare room.

    >>> [round(x, 3) for x in water_fill([0.2, 0.5, 0.6], 0.3)]
    [0.0, 0.333, 0.667]
    >>> [round(x, 3) for x in water_fill([0.2, 0.5, 0.3], 1.0)]
    [0.2, 0.5, 0.3]
    """
    s = [max(x, 0.0) for x in spare]
    total = sum(s)
    if total <= 1e-12:
        return [1.0 / len(s)] * len(s)
    if fill <= 0:
        return [x / total for x in s]
    # the level t is set by the k fullest-of-room targets, for the first k whose level is at
    # or above the next target's room (which then gets nothing); with k = all, fill is at
    # least the total spare room and every target is below the level
    top = sorted(s, reverse=True)
    acc = 0.0
    for k, x in enumerate(top, 1):
        acc += x
        t = (acc - fill) / k
        if k == len(top) or t >= top[k]:
            break
    kept = [max(x - t, 0.0) for x in s]
    norm = sum(kept)
    return [x / norm for x in kept]


def distance(a: Sequence[float], b: Sequence[float]) -> float:
    """How far apart two share vectors are: half their L1 distance, the fraction of new
    connections that would go elsewhere (0: the same, 1: disjoint).

    >>> distance([0.5, 0.5], [1.0, 0.0])
    0.5
    """
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / 2


def cpu_spare(
    predicted: Sequence[float],
    worker_cpu: Sequence[int | None],
    cpu_predicted: dict[int, float],
    capacity: float = 1.0,
) -> list[float]:
    """Spare capacity per worker, counted per CPU for workers pinned to one CPU.

    A worker's load is its on-CPU time plus its run-queue wait, and it is full at
    ``capacity``. A CPU with ``n`` pinned workers is full at ``n * capacity`` of the same
    measure (every task's on-CPU time plus the workers' waits), and its spare room is split
    among its workers: evenly, less the amount by which a worker's own load is above its
    CPU mates' mean (plus the amount by which it is below). So two workers on one CPU do not
    each count the room the other one uses, a CPU hog beside them takes its part, and of two
    workers on one CPU the less busy one (with the shorter queue) gets more. A worker that
    may run anywhere (``None``) keeps ``capacity - predicted``, as without this function.

    >>> cpu_spare([0.6, 0.5, 0.6, 0.2], [0, 1, 0, 1], {0: 1.8, 1: 0.8})
    [0.1, 0.45, 0.1, 0.75]
    >>> cpu_spare([0.5, 0.3], [None, None], {})
    [0.5, 0.7]
    """
    on_cpu: dict[int, int] = {}
    mates: dict[int, float] = {}
    for p, c in zip(predicted, worker_cpu, strict=True):
        if c is not None:
            on_cpu[c] = on_cpu.get(c, 0) + 1
            mates[c] = mates.get(c, 0.0) + p
    out = []
    for p, c in zip(predicted, worker_cpu, strict=True):
        if c is None or c not in cpu_predicted:
            out.append(max(capacity - p, 0.0))
        else:
            room = max(capacity * on_cpu[c] - cpu_predicted[c], 0.0) / on_cpu[c]
            out.append(round(max(room - (p - mates[c] / on_cpu[c]), 0.0), 12))
    return out


@dataclass
class SharePolicy:
    """Turns per-target predicted load into a table; keeps the table it last chose.

    Parameters
    ----------
    capacity : float
        Load at which a target is full, as a fraction of a CPU (1.0: one CPU).
    min_share : float
        Smallest share any live target gets, in [0, 1]; rounded up to whole slots and
        lowered to half an even share for large groups (:func:`tuner.table.floor_slots`,
        the rule the actuator checks tables by).
    max_step : float
        Largest change of any one share per window, in (0, 1].
    hysteresis : float
        Changes smaller than this (half the L1 distance of the shares) are not made.
    fill : float
        Load (fraction of a CPU) that the new connections of one window are expected to
        bring; shares fill the targets with the most spare room up to a common level with
        it (see :func:`water_fill`). 0: shares in proportion to spare room.
    """

    capacity: float = 1.0
    min_share: float = 0.05
    max_step: float = 0.25
    hysteresis: float = 0.05
    fill: float = 0.0

    def __post_init__(self) -> None:
        self.shares_: list[float] | None = None
        self.table_: list[int] | None = None

    def check(self, targets: int) -> None:
        for name, value, lo, hi in (
            ("capacity", self.capacity, 0.01, 64.0),
            ("min_share", self.min_share, 0.0, 1.0),
            ("max_step", self.max_step, 0.001, 1.0),
            ("hysteresis", self.hysteresis, 0.0, 1.0),
            ("fill", self.fill, 0.0, 64.0),
        ):
            if not lo <= value <= hi:
                raise TunerError(
                    f"The '{name}' parameter of SharePolicy must be in the range "
                    f"[{lo:g}, {hi:g}]. Got {value!r} instead."
                )

    def target_shares(
        self, predicted: Sequence[float], spare: Sequence[float] | None = None
    ) -> list[float]:
        """Shares by predicted spare capacity (in proportion to it, or water-filled with
        ``fill``), each at least ``min_share``. ``spare`` replaces ``capacity - predicted``
        (see :func:`cpu_spare`). Everything predicted full: even shares."""
        if spare is None:
            spare = [max(self.capacity - p, 0.0) for p in predicted]
        floor = floor_slots(self.min_share, len(spare)) / SLOTS
        return _bounded(water_fill(spare, self.fill), floor)

    def decide(
        self, predicted: Sequence[float], spare: Sequence[float] | None = None
    ) -> TableDecision:
        """The table for the next window, given each target's predicted load (and, when
        given, its spare capacity counted some other way, see :func:`cpu_spare`)."""
        n = len(predicted)
        self.check(n)
        want = self.target_shares(predicted, spare)
        current = self.shares_ if self.shares_ is not None and len(self.shares_) == n else None
        if current is None:
            current = [1.0 / n] * n
            self.table_ = None
        change = distance(want, current)
        if self.table_ is not None and change < self.hysteresis:
            return TableDecision(current, self.table_, False, f"change {change:.3f} < hysteresis")
        # move along the line from current to wanted, so the shares keep summing to 1 and
        # none moves by more than max_step (both ends respect min_share, so every point does)
        largest = max(abs(w - c) for w, c in zip(want, current, strict=True))
        alpha = min(1.0, self.max_step / largest) if largest > 0 else 1.0
        shares = [c + alpha * (w - c) for w, c in zip(want, current, strict=True)]
        hot = [i for i, p in enumerate(predicted) if p >= self.capacity * 0.8]
        why = f"spare capacity; hot targets {hot}" if hot else "spare capacity"
        floor = floor_slots(self.min_share, n)
        self.shares_, self.table_ = shares, table_for(shares, self.table_, floor)
        return TableDecision(shares, self.table_, True, why)

    def reset(self) -> None:
        """Forget the last table (after a fall-back to kernel defaults)."""
        self.shares_, self.table_ = None, None
