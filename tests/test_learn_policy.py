"""The learner and the policy, in pure Python (no kernel)."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from tuner.actuate.steering import Decision, NullSteering
from tuner.learn.online import Learner
from tuner.policy.shares import SLOTS, SharePolicy, table_for


@pytest.mark.parametrize("model", ["linear", "tree"])
def test_learned_models_beat_last_value_on_a_periodic_hotspot(model):
    lr = Learner(model=model, threshold=0.8)
    for w in range(400):
        lr.step(
            {
                f"w{i}": 0.95 if (w + i) % 4 == 0 else 0.3 + 0.1 * math.sin(w / 7 + i)
                for i in range(16)
            }
        )
    s = lr.scores()
    assert s["model_mae"] < 0.5 * s["baseline_mae"], s
    assert s["model_recall"] > 0.5 and s["model_precision"] > 0.5, s


def test_periodic_bursts_are_anticipated_over_the_horizon():
    """Bursts on two of four workers for 10 of every 50 windows: the season features let
    the learner see a burst coming, which the last value cannot (docs/learning.md quotes
    these figures: next window 0.83 of the last value's error, horizon 0.26, hotspot
    precision and recall 0.96 / 0.99)."""
    import numpy as np

    rng = np.random.default_rng(1)
    w = np.arange(3000)[:, None]
    loads = 0.3 + 0.6 * ((w % 50) < 10) * (np.arange(4)[None, :] < 2)
    loads = np.clip(loads + rng.normal(0, 0.05, (3000, 4)), 0, None)
    lr = Learner(model="linear", threshold=0.8, horizon=10)
    for row in loads:
        lr.step({f"w{i}": float(x) for i, x in enumerate(row)})
    k = lr.skill()
    assert k.model.mae < 0.9 * k.baseline.mae, k
    assert k.horizon_model.mae < 0.4 * k.horizon_baseline.mae, k
    assert k.model.precision > 0.9 and k.model.recall > 0.9, k


def test_linear_model_stays_finite_with_many_entities():
    lr = Learner(model="linear")
    for _ in range(200):
        preds = lr.step({f"w{i}": 0.5 for i in range(64)})
    assert all(0 <= p.load <= 4 and abs(p.load - 0.5) < 0.05 for p in preds.values())


def test_policy_moves_away_from_hot_targets_within_bounds():
    p = SharePolicy(min_share=0.05, max_step=0.1, hysteresis=0.02)
    first = p.decide([0.3, 0.3, 0.3, 0.3])
    assert first.changed and Counter(first.table) == {0: 64, 1: 64, 2: 64, 3: 64}
    d = p.decide([1.0, 0.2, 0.2, 0.2])
    assert d.shares[0] == pytest.approx(0.15)  # one bounded step of 0.1 from 0.25
    assert sum(d.shares) == pytest.approx(1.0)
    for _ in range(10):
        d = p.decide([1.0, 0.2, 0.2, 0.2])
    # never below the minimum share, in whole slots: 0.05 x 256 = 12.8, rounded up to 13
    assert d.shares[0] == pytest.approx(13 / 256) and Counter(d.table)[0] == 13
    same = p.decide([1.0, 0.21, 0.2, 0.2])
    assert not same.changed and same.table == d.table  # hysteresis


def test_water_filling_sends_new_connections_to_the_emptiest_workers():
    # skewed, but no worker near full: proportional shares stay nearly even, so the skew
    # that a few heavy connections made stays in place; water-filling evens it out
    loads = [0.55, 0.35, 0.35, 0.15]
    even = SharePolicy(max_step=1.0, hysteresis=0.0).decide(loads).shares
    assert max(even) - min(even) < 0.2
    filled = SharePolicy(max_step=1.0, hysteresis=0.0, fill=0.15).decide(loads).shares
    assert filled[3] > 0.6 and filled[0] == pytest.approx(13 / 256)  # the minimum share
    assert sum(filled) == pytest.approx(1.0)
    # a fill as large as all the spare room is the proportional policy again
    spare = sum(1 - x for x in loads)
    same = SharePolicy(max_step=1.0, hysteresis=0.0, fill=spare).decide(loads).shares
    assert same == pytest.approx(even)


def test_table_changes_move_few_slots():
    a = table_for([0.25] * 4)
    b = table_for([0.1, 0.3, 0.3, 0.3], a)
    moved = sum(x != y for x, y in zip(a, b, strict=True))
    assert len(b) == SLOTS and moved == 64 - Counter(b)[0]


class _Recorder(NullSteering):
    """Stands in for an actuator: remembers what would reach the kernel."""

    def __init__(self, targets: int) -> None:
        super().__init__(targets)
        self.writes, self.renewals = 0, 0

    def apply(self, table):
        d = super().apply(table)
        written = self.mode == "active"
        self.writes += written
        return Decision(d.time, self.mode, d.table, written, self.writes)

    def renew(self) -> None:
        self.renewals += 1


def _frames(loads_ns: list[float], pids: list[int]):
    from tuner.probes.base import Frame

    return [
        Frame("sched", f"task:{p}", 0, 100_000_000, {"oncpu_ns": ns}, {"tgid": str(p)})
        for p, ns in zip(pids, loads_ns, strict=True)
    ]


def test_switching_to_active_writes_the_table_even_when_the_policy_sees_no_change():
    from tuner.agent.build import build_agent
    from tuner.agent.config import AgentConfig
    from tuner.agent.workers import WorkerMap

    pids = [11, 12, 13, 14]
    cfg = AgentConfig.from_dict({"model": {"kind": "last", "warmup_windows": 1}})
    act = _Recorder(len(pids))
    agent = build_agent(cfg, WorkerMap.from_pids(pids, cpus=[None] * 4), act, "shadow")
    steady = _frames([90e6, 20e6, 20e6, 20e6], pids)  # the same skew every window
    for _ in range(30):  # the policy settles on its table while nothing is written
        agent.step(steady)
    assert act.writes == 0
    agent.set_mode("active")
    record = agent.step(steady)
    assert act.writes == 1 and record.workers.outcome.written  # although "changed" is False
    agent.step(steady)
    assert act.writes == 1 and act.renewals >= 1  # then only the lease is renewed
    agent.set_mode("shadow")
    agent.set_mode("active")
    agent.step(steady)
    assert act.writes == 2  # back from shadow: the kernel's old table is replaced, not revived
    assert agent.status()["guard"] == "armed"


def test_batch_history_gives_the_features_history_gives():
    """The learner's array history and the per-entity History (the definition that offline
    training reproduces) agree column by column, also as entities come and go."""
    import numpy as np

    from tuner.learn.features import FEATURES, History
    from tuner.learn.history import BatchHistory

    rng = np.random.default_rng(5)
    batch, single = BatchHistory(capacity=2), {}
    for w in range(200):
        names = [f"e{i}" for i in range(6) if (w + i) % 90]  # some miss a window and return
        for gone in set(single) - set(names):
            del single[gone]
        batch.forget([e for e in batch.index if e not in names])
        rows = batch.rows(names)
        loads = 0.1 * rng.random(len(names)) + (1.0 if w % 16 < 3 else 0.3)  # a period of 16
        runq = rng.random(len(names)) * 0.1
        shares = rng.random(len(names))
        batch.push(rows, loads, {"runq_frac": runq}, shares)
        X = batch.features(rows)
        for i, e in enumerate(names):
            h = single.setdefault(e, History())
            h.push(float(loads[i]), {"runq_frac": float(runq[i])}, float(shares[i]))
            want = h.features(batch.season.period)
            got = {f: X[i, j] for j, f in enumerate(FEATURES) if not np.isnan(X[i, j])}
            assert got.keys() == want.keys() and np.allclose(
                list(got.values()), [want[k] for k in got]
            ), (w, e)
    assert batch.season.period == 16 and "season" in want


def test_hot_guard_without_the_horizon_policy_is_refused():
    """policy.hot_guard changes only the horizon policy's decisions: alone it would do
    nothing, so the config says so."""
    from tuner.agent.config import AgentConfig
    from tuner.errors import TunerError

    with pytest.raises(TunerError, match="set policy.horizon = true as well"):
        AgentConfig.from_dict({"policy": {"hot_guard": 0.8}})
    cfg = AgentConfig.from_dict({"policy": {"hot_guard": 0.8, "horizon": True}})
    assert cfg.get("policy.hot_guard") == 0.8
