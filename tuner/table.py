"""The indirection table that the policy makes and the steering programs read.

A table is a list of :data:`SLOTS` target indices: slot ``hash & (SLOTS - 1)`` of a new
connection or flow goes to target ``table[slot]``. ``bpf/steer.h`` defines the same size as
``STEER_SLOTS``; the steering loaders check that the compiled program agrees.

The policy thinks in shares and the kernel in slots, so both sides take the smallest number
of slots a live target must get from one function, :func:`floor_slots`: a policy's table always
passes the actuator's check (a 6-worker group with ``min_share = 0.05`` once asked for 12.8
slots per worker, got 12 after rounding, and the actuator refused the table).

>>> floor_slots(0.05, 6)       # 0.05 x 256 = 12.8, rounded up
13
>>> floor_slots(0.05, 64)      # at most half an even split: 256 / 64 / 2
2
>>> counts = slot_counts([0.05, 0.05, 0.05, 0.05, 0.05, 0.75], floor=13)
>>> counts, sum(counts)
([13, 13, 13, 13, 13, 191], 256)
>>> check_table([0, 1] * 128, targets=2, min_share=0.25)
>>> check_table([0] * 256, targets=2, min_share=0.1)
Traceback (most recent call last):
...
tuner.errors.TunerError: table gives target 1 0 of 256 slots, below the minimum of 26 \
(min_share 0.100)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from tuner.errors import TunerError

SLOTS = 256


def floor_slots(min_share: float, targets: int) -> int:
    """The fewest slots each live target gets: ``min_share`` of the table rounded up, but at
    most half an even split, so that a large group keeps room to steer.

    >>> floor_slots(0.0, 4), floor_slots(0.1, 2), floor_slots(1.0, 1)
    (0, 26, 128)
    """
    if targets < 1:
        return 0
    wanted = math.ceil(min_share * SLOTS - 1e-9)
    return max(0, min(wanted, SLOTS // (2 * targets)))


def slot_counts(shares: Sequence[float], floor: int = 0) -> list[int]:
    """Slots per target in proportion to ``shares`` (largest remainder), then every target
    raised to ``floor`` slots, taken from the targets with the most.

    >>> slot_counts([0.5, 0.5]), slot_counts([1.0, 0.0], floor=3), slot_counts([0.0, 0.0])
    ([128, 128], [253, 3], [128, 128])
    """
    n = len(shares)
    total = sum(max(s, 0.0) for s in shares)
    if total <= 1e-12:  # nothing to go by: even
        shares, total = [1.0] * n, float(n)
    raw = [max(s, 0.0) / total * SLOTS for s in shares]
    counts = [int(r) for r in raw]
    by_remainder = sorted(range(n), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in by_remainder[: SLOTS - sum(counts)]:
        counts[i] += 1
    floor = min(floor, SLOTS // n)
    for i in range(n):
        while counts[i] < floor:
            richest = max(range(n), key=lambda j: counts[j])
            counts[richest] -= 1
            counts[i] += 1
    return counts


def table_for(
    shares: Sequence[float], previous: Sequence[int] | None = None, floor: int = 0
) -> list[int]:
    """A table with :func:`slot_counts` slots per target, changing as few slots of
    ``previous`` as it can.

    >>> t = table_for([0.5, 0.5]); t[:4], len(t)
    ([0, 1, 0, 1], 256)
    >>> sum(a != b for a, b in zip(t, table_for([0.75, 0.25], t)))
    64
    """
    n = len(shares)
    counts = slot_counts(shares, floor)
    if previous is None or len(previous) != SLOTS or max(previous, default=0) >= n:
        return [i for k in range(max(counts)) for i in range(n) if counts[i] > k]
    table = list(previous)
    have = [0] * n
    for t in table:
        have[t] += 1
    free = []
    for slot, t in enumerate(table):
        if have[t] > counts[t]:
            have[t] -= 1
            free.append(slot)
    for i in range(n):
        while have[i] < counts[i]:
            table[free.pop()] = i
            have[i] += 1
    return table


def even_table(targets: Sequence[int]) -> list[int]:
    """A table that spreads the slots evenly over ``targets``.

    >>> Counter(even_table([0, 2]))
    Counter({0: 128, 2: 128})
    """
    return [targets[i % len(targets)] for i in range(SLOTS)]


def check_table(
    table: Sequence[int], targets: int, min_share: float = 0.0, live: Sequence[int] | None = None
) -> None:
    """Refuse a table that names a target outside the group or gives a live target fewer
    than :func:`floor_slots` slots."""
    if len(table) != SLOTS:
        raise TunerError(f"table has {len(table)} slots; it must have {SLOTS}")
    counts = Counter(table)
    for t in counts:
        if not isinstance(t, int) or not 0 <= t < targets:
            raise TunerError(f"table names target {t}, which is not in the group of {targets}")
    floor = floor_slots(min_share, targets)
    for t in range(targets) if live is None else live:
        if counts.get(t, 0) < floor:
            raise TunerError(
                f"table gives target {t} {counts.get(t, 0)} of {SLOTS} slots, below the "
                f"minimum of {floor} (min_share {min_share:.3f})"
            )
