"""One check suite over every steering and every model kind, as river runs one over every
estimator: what a channel relies on holds for each implementation."""

from __future__ import annotations

import math
import os
import socket

import pytest

from tuner.actuate.reuseport import ReuseportSteering
from tuner.actuate.steering import NullSteering, Placement, Steering
from tuner.actuate.xdp import XdpSteering
from tuner.errors import TunerError
from tuner.learn.features import History
from tuner.learn.models import MODELS, make_model
from tuner.learn.online import Learner
from tuner.table import SLOTS

pytestmark = pytest.mark.kernel


def _group(kind: int, n: int = 2) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", socks[0].getsockname()[1] if socks else 0))
        if kind == socket.SOCK_STREAM:
            s.listen(8)
        socks.append(s)
    return socks


STEERINGS = ["null", "reuseport-tcp", "reuseport-udp", "xdp-cpus", "xdp-backends"]


@pytest.fixture(params=STEERINGS)
def steering(request):
    """(an open steering of 2 targets in shadow mode, whether it writes to the kernel)"""
    name = f"t-conf-{request.param}-{os.getpid()}"
    socks: list[socket.socket] = []
    if request.param == "null":
        yield NullSteering(2, min_share=0.1), False
        return
    if request.param.startswith("reuseport"):
        socks = _group(socket.SOCK_DGRAM if request.param.endswith("udp") else socket.SOCK_STREAM)
        s = ReuseportSteering(name=name, sockets=socks, min_share=0.1)
    elif request.param == "xdp-cpus":
        s = XdpSteering(name=name, cpus=[0, (os.cpu_count() or 1) - 1], min_share=0.1)
    else:
        s = XdpSteering(name=name, devices=["lo", "lo"], macs=["02:00:00:00:00:01"] * 2,
                        min_share=0.1)  # fmt: skip
    try:
        with s:
            yield s, True
    finally:
        for sock in socks:
            sock.close()


def test_it_is_a_steering(steering):
    s, _ = steering
    assert isinstance(s, Steering) and s.targets() == 2 and s.mode == "shadow"


def test_placement_counts_per_target_and_per_reason(steering):
    s, _ = steering
    p = s.placement()
    assert isinstance(p, Placement) and len(p.by_target) == s.targets()
    assert p.placed == 0 and all(isinstance(n, int) and n >= 0 for n in p.kernel.values())
    s.close()  # the agent's final status is read after its steering is closed
    assert s.placement() == p


def test_shadow_records_and_active_writes(steering):
    s, writes = steering
    assert s.apply([0, 1] * (SLOTS // 2)).written is False
    s.set_mode("active")
    d = s.apply([1, 0] * (SLOTS // 2))
    assert d.written is writes and d.table == [1, 0] * (SLOTS // 2)
    s.renew()
    s.expire()
    s.set_mode("shadow")


@pytest.mark.parametrize(
    "table, words",
    [
        ([2] * SLOTS, "not in the group"),
        ([0] * (SLOTS - 1), "slots"),
        ([0] * SLOTS, "below the minimum"),
    ],
    ids=["unknown-target", "short", "starved"],
)
def test_bad_tables_are_refused_in_either_mode(steering, table, words):
    s, _ = steering
    for mode in ("shadow", "active"):
        s.set_mode(mode)
        with pytest.raises(TunerError, match=words):
            s.apply(table)


def test_a_bad_mode_is_refused(steering):
    s, _ = steering
    with pytest.raises(TunerError, match="mode"):
        s.set_mode("paused")


def test_flow_capability_is_declared_not_probed(steering):
    s, _ = steering
    hits = s.flow_hits()
    assert isinstance(hits, dict)
    if not s.counts_flows:
        assert hits == {} and s.set_overrides({}) is False
    else:
        s.set_mode("active")
        assert s.set_overrides({12345: 1}) is True


# -- models ----------------------------------------------------------------------------------
def _saved_model(tmp_path_factory):
    from tuner.learn.boost import OfflineModel
    from tuner.learn.modelfile import load_model
    from tuner.offline.train import synthetic_trace, train

    d = tmp_path_factory.mktemp("model")
    trace = synthetic_trace(str(d / "t.parquet"), windows=300)
    train([trace], str(d / "m"), max_iter=20)
    return OfflineModel.from_saved(load_model(str(d / "m")))


@pytest.fixture(params=[*MODELS, "saved"])
def model(request, tmp_path_factory):
    return _saved_model(tmp_path_factory) if request.param == "saved" else make_model(request.param)


def _rows(n: int = 120):
    h = History()
    for i in range(n):
        load = 0.3 + 0.5 * (i % 5 == 0)
        h.push(load, {"runq_frac": 0.05}, 0.25)
        yield h.features(), 0.3 + 0.5 * ((i + 1) % 5 == 0)


@pytest.mark.filterwarnings("ignore")
def test_models_learn_one_and_predict_one_finite_loads(model):
    for x, y in _rows():
        p = model.predict_one(x)
        assert math.isfinite(p) and 0.0 <= p <= 4.0
        model.learn_one(x, y)


def test_models_take_a_row_without_an_optional_feature(model):
    x, y = next(iter(_rows(3)))
    x = {k: v for k, v in x.items() if k != "runq_frac"}
    model.learn_one(x, y)
    assert math.isfinite(model.predict_one(x))


def test_a_learner_predicts_every_entity_with_each_model(model):
    lr = Learner(model, threshold=0.8)
    for w in range(30):
        preds = lr.step({f"w{i}": 0.1 * i + 0.05 * (w % 3) for i in range(5)})
    assert set(preds) == {f"w{i}" for i in range(5)}
    assert all(0.0 <= p.p_hot <= 1.0 and math.isfinite(p.load) for p in preds.values())
