"""Traces: record from the test cluster, replay, train, evaluate, load into the agent; and
every kind of bad input gets a one-line error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, one_line_error, run_tuner

from tuner.agent.decisions import by_entity
from tuner.learn.boost import OfflineModel, feature_matrix
from tuner.learn.features import FEATURES, History
from tuner.learn.modelfile import load_model
from tuner.offline.train import synthetic_trace
from tuner.trace.reader import read_trace
from tuner.trace.schema import arrow_schema

PORT = 8000


# -- pure Python ------------------------------------------------------------------------------
@pytest.mark.parametrize("periodic", [False, True])
def test_offline_features_equal_the_live_agents_features(periodic):
    """Offline training builds each row as History builds it live, column by column, NaN
    where History leaves a feature out; also the season features of a periodic load."""
    from tuner.learn.features import FEATURES
    from tuner.learn.season import Seasonality

    rng = np.random.default_rng(3)
    n = 160 if periodic else 30
    loads = rng.random((n, 3))
    if periodic:  # a burst every 20 windows
        loads = 0.1 * loads + np.where(np.arange(n) % 20 < 4, 1.0, 0.3)[:, None]
    shares = rng.random((n, 3))
    runq = rng.random((n, 3)) * 0.1
    live = loads * rng.random((n, 3))
    X, y, win = feature_matrix(loads, shares, runq, live)
    season = Seasonality()  # the channel's period, from the mean load, as the learner has it
    hs = [History() for _ in range(3)]
    for w in range(n - 1):
        season.push(float(loads[w].mean()))
        for e in range(3):
            hs[e].push(loads[w, e], {"runq_frac": runq[w, e], "live_load": live[w, e]},
                       shares[w, e])  # fmt: skip
            row = X[w * 3 + e]
            got = {f: v for f, v in zip(FEATURES, row, strict=True) if not np.isnan(v)}
            want = hs[e].features(season.period)
            assert got.keys() == want.keys(), (w, e)
            assert np.allclose(list(got.values()), [want[k] for k in got]), (w, e)
            assert y[w * 3 + e] == loads[w + 1, e] and win[w * 3 + e] == w
    if periodic:
        assert season.period == 20 and "season_delta" in want


@pytest.fixture
def trace_and_model(tmp_path):
    trace = synthetic_trace(str(tmp_path / "t.parquet"), windows=600)
    run_tuner(
        "train", "--trace", trace, "--out", str(tmp_path / "m"), "--max-iter", "30", check=True
    )
    return trace, str(tmp_path / "m")


def test_truncated_or_corrupt_part_is_named(trace_and_model, tmp_path):
    trace, model = trace_and_model
    part = os.path.join(trace, "part-00000.parquet")
    data = open(part, "rb").read()
    with open(part, "wb") as f:
        f.write(data[: len(data) // 2])  # as a full disk or a crash mid-copy leaves it
    for args in (
        ("replay", trace),
        ("train", "--trace", trace, "--out", str(tmp_path / "x")),
        ("evaluate", "--trace", trace, "--model", model),
    ):
        one_line_error(run_tuner(*args), part, "truncated or corrupt")
    with open(part, "wb") as f:
        f.write(b"PAR1 this is not parquet at all PAR1")
    one_line_error(run_tuner("replay", trace), part, "not a readable Parquet file")


def test_a_trace_from_before_the_cpu_columns_still_replays(tmp_path):
    src = synthetic_trace(str(tmp_path / "new.parquet"), windows=50)
    part = os.path.join(src, "part-00000.parquet")
    table = pq.read_table(part)
    old = table.drop_columns(["cpu", "cpu_load"]).replace_schema_metadata(table.schema.metadata)
    pq.write_table(old, part)
    rp = json.loads(run_tuner("replay", src, "--json", check=True).stdout)
    assert rp["windows"] == 50


def test_replay_log_is_the_decision_log_as_strict_json(tmp_path):
    # the replayed decisions in the live log's form: columns by entity, a missing number null
    # (strict JSON: Python's json would write NaN)
    src = synthetic_trace(str(tmp_path / "t.parquet"), windows=40)
    log = tmp_path / "replayed.jsonl"
    run_tuner("replay", src, "--log", str(log), check=True)

    def refuse(name):
        raise ValueError(name)

    lines = [json.loads(x, parse_constant=refuse) for x in log.read_text().splitlines()]
    assert len(lines) == 40
    w = lines[-1]["workers"]
    assert len(w["loads"]) == len(w["entities"]) and set(w["predictions"]) >= {"load", "p_hot"}
    assert set(by_entity(w, "predictions")) == set(w["entities"])


def _write_part(path, rows: int, meta: dict) -> None:
    os.makedirs(path, exist_ok=True)
    schema = arrow_schema(meta)
    cols = {f.name: pa.array([], type=f.type) for f in schema}
    table = pa.Table.from_pydict(cols, schema=schema)
    if rows:
        table = pq.read_table(synthetic_trace(str(path) + ".src", windows=rows)).cast(schema)
    pq.write_table(table, os.path.join(path, "part-00000.parquet"))


def test_wrong_schema_version_empty_trace_and_missing_trace(tmp_path):
    old = tmp_path / "old.parquet"
    _write_part(old, 10, {"schema_version": 99, "window_ms": 100, "pids": []})
    one_line_error(run_tuner("replay", str(old)), "schema version 99", "reads version 1")
    empty = tmp_path / "empty.parquet"
    _write_part(empty, 0, {"schema_version": 1, "window_ms": 100, "pids": []})
    one_line_error(run_tuner("replay", str(empty)), str(empty), "empty")
    one_line_error(run_tuner("replay", str(tmp_path / "none")), "not found")
    killed = tmp_path / "killed.parquet"
    killed.mkdir()
    (killed / "part-00000.parquet.inprogress").write_bytes(b"PAR1")
    one_line_error(run_tuner("replay", str(killed)), "no completed part")
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), foreign)
    one_line_error(run_tuner("replay", str(foreign)), "not a tuner trace")


def test_a_model_that_is_not_one_is_refused(trace_and_model, tmp_path):
    trace, model = trace_and_model
    one_line_error(
        run_tuner("evaluate", "--trace", trace, "--model", str(tmp_path / "nope")), "not found"
    )
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / "model.json").write_text("{not json")
    one_line_error(
        run_tuner("evaluate", "--trace", trace, "--model", str(bogus)),
        str(bogus / "model.json"),  # the file at fault is named
        "is not usable",
    )
    meta = json.loads(open(os.path.join(model, "model.json")).read())
    meta["features"] = [*meta["features"], "softirq_frac"]
    with open(os.path.join(model, "model.json"), "w") as f:
        json.dump(meta, f)
    one_line_error(
        run_tuner("evaluate", "--trace", trace, "--model", model),
        "does not compute",
        "softirq_frac",
    )


def test_train_then_evaluate_beats_last_value_on_held_out_windows(trace_and_model, tmp_path):
    trace, model = trace_and_model
    meta = json.load(open(os.path.join(model, "model.json")))
    assert meta["metrics"]["holdout_model_mae"] < meta["metrics"]["holdout_baseline_mae"]
    assert meta["trained_on"][0]["split_window"] == 479  # the last fifth is never trained on
    npz = np.load(os.path.join(model, "trees.npz"), allow_pickle=False)  # numbers only
    assert npz["value"].dtype == np.float64
    r = run_tuner(
        "evaluate",
        "--trace",
        trace,
        "--model",
        model,
        "--out",
        str(tmp_path / "ev"),
        "--json",
        check=True,
    )
    out = json.loads(r.stdout)
    assert out["scored_from_window"] == 479 and out["model_mae"] < out["baseline_mae"]
    for png in ("predictions.png", "error_cdf.png", "shares.png"):
        assert (tmp_path / "ev" / png).stat().st_size > 1000


# -- on the kernel ----------------------------------------------------------------------------
@pytest.mark.kernel
def test_record_replay_train_evaluate_and_run_with_the_model(served, tmp_path):
    c, pids, load = served
    gen = load(30, profile="shifting-hotspot", profile_args={"shift_s": 1.0})
    trace = str(tmp_path / "rec.parquet")
    try:
        r = run_tuner(
            "record",
            "--out",
            trace,
            "--port",
            str(PORT),
            "--netns",
            c.host("server").netns,
            "--seconds",
            "6",
            "--part-seconds",
            "1.5",
            "--window-ms",
            "50",
            timeout=60,
            check=True,
        )
        rec = json.loads(r.stdout)
        t = read_trace(trace)
        assert rec["windows"] >= 80 and rec["parts"] >= 3 and len(t.parts) == rec["parts"]
        assert t.entities == [f"worker:{i}" for i in range(4)]
        assert t.meta["pids"] == pids and t.meta["window_ms"] == 50 and t.meta["kernel"]
        assert np.nanmax(t.matrix("load")) > 0.1  # the workers' load was seen

        rp = json.loads(run_tuner("replay", trace, "--json", check=True).stdout)
        assert rp["windows"] == t.windows and rp["max_diff_to_recording"] == 0.0

        model = str(tmp_path / "model")
        run_tuner("train", "--trace", trace, "--out", model, "--max-iter", "30", check=True)
        ev = json.loads(
            run_tuner("evaluate", "--trace", trace, "--model", model, "--json", check=True).stdout
        )
        assert ev["rows_scored"] > 0 and ev["model_mae"] >= 0

        cfg = tmp_path / "tuner.toml"
        cfg.write_text(
            f"[target]\npids = {pids}\nport = {PORT}\n"
            f'[agent]\nwindow_ms = 50\nname = "t-trace"\ncontrol_socket = "{tmp_path}/s.sock"\n'
        )
        ran = run_tuner(
            "run",
            "--config",
            str(cfg),
            "--model",
            model,
            "--seconds",
            "2",
            "--record",
            str(tmp_path / "run.parquet"),
            timeout=60,
            check=True,
        )
        status = json.loads(ran.stdout.splitlines()[-1])
        assert status["model"] == model and status["windows"] >= 10
        assert read_trace(str(tmp_path / "run.parquet")).windows >= 10

        cfg.write_text(cfg.read_text().replace("window_ms = 50", "window_ms = 100"))
        one_line_error(
            run_tuner("run", "--config", str(cfg), "--model", model, "--seconds", "1"),
            "50 ms windows",
            "100 ms",
        )
    finally:
        gen.kill()
        run_tuner("cleanup")


@pytest.mark.kernel
def test_a_recording_killed_with_sigkill_stays_readable(served, tmp_path):
    c, pids, load = served
    gen = load(20)
    trace = tmp_path / "killed.parquet"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tuner",
            "record",
            "--out",
            str(trace),
            "--pid",
            str(pids[0]),
            "--pid",
            str(pids[1]),
            "--part-seconds",
            "0.5",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while len(list(trace.glob("*.parquet"))) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        time.sleep(0.2)  # into the next part
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        gen.kill()
    t = read_trace(str(trace))
    assert len(t.parts) >= 2 and t.windows >= 5
    assert t.entities == ["worker:0", "worker:1"]
    assert run_tuner("replay", str(trace)).returncode == 0


def test_a_model_saved_before_a_feature_was_added_still_runs():
    # models/shifting was trained before live_load existed: it predicts from its own columns
    saved = load_model(os.path.join(REPO, "models", "shifting"))
    saved.check(100)
    assert "live_load" not in saved.meta["features"] and "live_load" in FEATURES
    model = OfflineModel.from_saved(saved)
    h = History()
    for load in (0.2, 0.5, 0.4):
        h.push(load, {"runq_frac": 0.05, "live_load": load / 2}, 0.25)
    x = h.features()
    without = {k: v for k, v in x.items() if k != "live_load"}
    assert model.predict_one(x) == pytest.approx(model.predict_one(without))
    model.learn_one(x, 0.3)  # the online part takes the new feature
