"""A new model picked up without a restart: tried in shadow beside the one in use, adopted
only if it does no worse (tuner.learn.challenge, tuner.agent.reload)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import one_line_error, run_tuner
from helpers import Agent, wait_for

from tuner.agent.reload import ModelReload
from tuner.learn.boost import OfflineModel
from tuner.learn.challenge import Challenge
from tuner.learn.modelfile import load_model, save_model
from tuner.learn.online import Learner
from tuner.learn.trees import TreeEnsemble
from tuner.offline.train import synthetic_loads, synthetic_trace, train

EMPTY_ONLINE = {"counts": {}, "means": {}, "vars": {}, "weights": {}, "intercept": 0.0}


def wrong_model(path: str, change: float = 3.0) -> str:
    """A saved model that always predicts the load rises by ``change``: plainly worse."""
    t = TreeEnsemble.stump(feature=0, threshold=0.5, below=change, above=change, baseline=0.0)
    save_model(path, t, EMPTY_ONLINE, {"window_ms": 100, "metrics": {}})
    return path


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("good")
    trace = synthetic_trace(str(d / "t"), windows=1000)
    train([trace], str(d / "m"), max_iter=20)
    return str(d / "m")


def feed(learner: Learner, loads: np.ndarray, start: int, windows: int) -> None:
    for w in range(start, start + windows):
        learner.step({f"worker:{i}": float(x) for i, x in enumerate(loads[w])})


def test_a_better_model_is_adopted_and_a_worse_one_is_not(good, tmp_path):
    loads = synthetic_loads(1200, 4, seed=7)
    bad = load_model(wrong_model(str(tmp_path / "bad")))
    learner = Learner(OfflineModel.from_saved(bad), 0.8)
    feed(learner, loads, 0, 100)
    better = load_model(good)
    learner.challenge(Challenge(OfflineModel.from_saved(better), better.meta["version"], 200))
    feed(learner, loads, 100, 150)
    assert learner.settle() is None  # still on trial: 150 of 200 windows
    assert learner.model_ is not None and learner.model_.trees is bad.trees
    feed(learner, loads, 250, 60)
    verdict = learner.settle()
    assert verdict["adopted"] and verdict["windows"] == 200
    assert verdict["challenger_mae"] < verdict["current_mae"]
    assert learner.model_.trees is better.trees  # in use from now on

    worse = load_model(wrong_model(str(tmp_path / "bad2"), change=2.0))
    learner.challenge(Challenge(OfflineModel.from_saved(worse), worse.meta["version"], 100))
    feed(learner, loads, 310, 110)
    verdict = learner.settle()
    assert not verdict["adopted"] and verdict["challenger_mae"] > verdict["current_mae"]
    assert learner.model_.trees is better.trees  # kept


def test_the_watch_tries_a_new_version_refuses_a_broken_one_and_ignores_the_same(good, tmp_path):
    link = str(tmp_path / "current")
    os.symlink(good, link)
    watch = ModelReload(link, window_ms=100, every_s=0.0, trial_windows=30)
    learner = Learner(OfflineModel.from_saved(load_model(link)), 0.8)
    loads = synthetic_loads(400, 4, seed=3)
    assert watch.poll(learner, 1.0) is None  # nothing new
    publish = str(tmp_path / "current.tmp")
    os.symlink(wrong_model(str(tmp_path / "v2")), publish)
    os.replace(publish, link)  # flipped atomically
    event = watch.poll(learner, 2.0)
    assert event["action"] == "trial" and event["in_use"] == watch.current != event["version"]
    n = 0
    while (event := watch.poll(learner, 3.0)) is None:
        feed(learner, loads, n, 1)
        n += 1
    assert event["action"] == "kept" and event["in_use"] == load_model(good).meta["version"]
    assert n == 31  # the trial's windows (its first prediction is scored a window later)

    broken = tmp_path / "v3"
    broken.mkdir()
    (broken / "model.json").write_text("{not json")
    os.symlink(str(broken), publish)
    os.replace(publish, link)
    event = watch.poll(learner, 4.0)
    assert event["action"] == "refused" and "model.json" in event["why"]
    assert watch.poll(learner, 5.0) is None  # refused once, not again until it changes


@pytest.mark.kernel
def test_a_running_agent_tries_a_published_model_and_keeps_its_own(served, good, tmp_path):
    c, pids, load = served
    link = tmp_path / "current"
    os.symlink(good, link)
    agent = Agent(
        tmp_path, pids, "shadow",
        model={"path": str(link), "reload_s": 0.2, "trial_windows": 20},
    )  # fmt: skip
    gen = load(120)
    try:
        version = load_model(good).meta["version"]
        assert agent.status()["model_version"] == version
        wait_for(lambda: agent.busy_windows() >= 5)
        publish = tmp_path / "current.tmp"
        os.symlink(wrong_model(str(tmp_path / "v2")), publish)
        os.replace(publish, link)

        def events():
            return [e for e in agent.entries() if e.get("event") == "model"]

        wait_for(lambda: [e["action"] for e in events()] == ["trial", "kept"])
        assert agent.status()["model_version"] == version and not agent.status()["model_trial"]
        assert events()[1]["challenger_mae"] > events()[1]["current_mae"]
    finally:
        gen.kill()
        done = agent.stop()
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout.splitlines()[-1])
    assert status["model_version"] == version


def test_reload_settings_are_checked(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text("[target]\nport = 8000\n[model]\nreload_s = -1\n")
    one_line_error(run_tuner("run", "--config", str(cfg)), "model.reload_s")
