"""Every table the policy makes is one the actuator writes (issue 18, item 2).

Six workers with ``min_share = 0.05`` asked for 12.8 slots each, got 12 after rounding, and the
actuator refused the table at the agent's first decision. Policy and actuator now take the
floor from one function; these properties check it over group sizes 1 to 64.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuner.errors import TunerError
from tuner.policy.shares import SharePolicy
from tuner.table import SLOTS, check_table, floor_slots, slot_counts, table_for


def test_six_workers_at_five_percent_is_written():
    """The case of the issue: 6 workers, min_share 0.05, a skewed first decision."""
    p = SharePolicy(min_share=0.05, max_step=0.5, hysteresis=0.05, fill=0.15)
    d = p.decide([0.9, 0.9, 0.9, 0.1, 0.2, 0.9])
    check_table(d.table, targets=6, min_share=0.05)  # the actuator's own check
    assert min(Counter(d.table).values()) == 13  # 0.05 x 256 = 12.8, rounded up


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 64),
    min_share=st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.3, 1.0]),
    fill=st.sampled_from([0.0, 0.05, 0.15, 1.0]),
    max_step=st.sampled_from([0.1, 0.5, 1.0]),
    loads=st.lists(st.floats(0.0, 3.0, allow_nan=False), min_size=64, max_size=64),
    windows=st.integers(1, 4),
)
def test_every_policy_table_passes_the_actuator_check(n, min_share, fill, max_step, loads,
                                                      windows):  # fmt: skip
    p = SharePolicy(min_share=min_share, max_step=max_step, hysteresis=0.0, fill=fill)
    for w in range(windows):
        predicted = [loads[(i + 7 * w) % 64] for i in range(n)]
        d = p.decide(predicted)
        assert len(d.table) == SLOTS and set(d.table) <= set(range(n))
        check_table(d.table, targets=n, min_share=min_share)
        assert sum(d.shares) == pytest.approx(1.0)


@given(
    shares=st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=64),
    min_share=st.floats(0.0, 1.0),
)
def test_slot_counts_fill_the_table_and_respect_the_floor(shares, min_share):
    floor = floor_slots(min_share, len(shares))
    counts = slot_counts(shares, floor)
    assert sum(counts) == SLOTS and min(counts) >= floor
    table = table_for(shares, None, floor)
    assert Counter(table) == {i: c for i, c in enumerate(counts) if c}


def test_a_table_below_the_floor_is_refused_with_the_slots_named():
    with pytest.raises(TunerError, match="target 1 12 of 256 slots, below the minimum of 13"):
        check_table([0] * 244 + [1] * 12, targets=2, min_share=0.05)
