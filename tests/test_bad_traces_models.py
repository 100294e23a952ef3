"""Traces and models that lie (issue 18, items 4, 9, 11, 12 and the unreadable trace of 14):
each is refused with one line that names the file, the column or array, and the row, and
nothing is left half-written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import one_line_error, run_tuner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuner.errors import TunerError
from tuner.learn.modelfile import load_model, save_model
from tuner.learn.trees import TreeEnsemble
from tuner.offline.train import synthetic_trace
from tuner.trace.reader import read_trace
from tuner.trace.schema import META_KEY


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A synthetic trace and a model trained on it."""
    d = tmp_path_factory.mktemp("good")
    trace = synthetic_trace(str(d / "t.parquet"), windows=400)
    run_tuner("train", "--trace", trace, "--out", str(d / "m"), "--max-iter", "20", check=True)
    return trace, str(d / "m")


def _rewrite(trace: str, out: Path, change) -> str:
    """A copy of ``trace`` with ``change(columns: dict of numpy arrays, meta: dict)`` applied."""
    table = pq.read_table(os.path.join(trace, "part-00000.parquet"))
    cols = {n: table.column(n).to_numpy(zero_copy_only=False).copy() for n in table.column_names}
    meta = json.loads(table.schema.metadata[META_KEY])
    meta = change(cols, meta) or meta
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    schema = table.schema.with_metadata({META_KEY: raw})
    out.mkdir()
    pq.write_table(pa.Table.from_pydict(cols, schema=schema), out / "part-00000.parquet")
    return str(out)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, -0.5], ids=["nan", "inf", "-inf", "neg"])
def test_a_load_that_is_not_a_finite_number_is_refused_everywhere(good, tmp_path, bad):
    trace, model = good

    def poison(cols, meta):
        cols["load"][37] = bad

    t = _rewrite(trace, tmp_path / "bad.parquet", poison)
    part = os.path.join(t, "part-00000.parquet")
    for args in (
        ("replay", t),
        ("evaluate", "--trace", t, "--model", model),
        ("train", "--trace", t, "--out", str(tmp_path / "m")),
    ):
        one_line_error(run_tuner(*args), part, "column 'load', row 37")
    assert not (tmp_path / "m").exists()  # train made nothing


def test_an_infinite_number_in_any_float_column_is_refused(good, tmp_path):
    trace, _ = good

    def poison(cols, meta):
        cols["runq_frac"][5] = np.inf

    t = _rewrite(trace, tmp_path / "bad.parquet", poison)
    one_line_error(run_tuner("replay", t), "column 'runq_frac', row 5", "not a finite number")


@pytest.mark.parametrize(
    "change,words",
    [
        (lambda c, m: b"[1, 2, 3]", ("metadata that is not a JSON object", "list")),
        (lambda c, m: b"[" * 100000, ("corrupt tuner metadata",)),
        (lambda c, m: c["window"].__setitem__(slice(None), c["window"] + 10**12), ("window",)),
        (lambda c, m: c["window"].__setitem__(0, -1), ("column 'window', row 0",)),
        (lambda c, m: c["window"].__setitem__(slice(None), c["window"] * 10**4), ("count up",)),
    ],
    ids=["meta-list", "meta-deep", "window-1e12", "window-negative", "window-gaps"],
)
def test_trace_metadata_and_window_numbers_that_lie(good, tmp_path, change, words):
    trace, _ = good
    t = _rewrite(trace, tmp_path / "bad.parquet", change)
    one_line_error(run_tuner("replay", t), *words)


def test_an_unreadable_trace_says_permission_denied(good):
    """Read as another user (the trace's folders are root's, mode 0700): it used to say
    "record for longer"."""
    trace, _ = good
    os.seteuid(65534)  # the checks run as that user; seteuid(0) takes root back
    try:
        with pytest.raises(TunerError, match="permission denied"):
            read_trace(trace)
    finally:
        os.seteuid(0)


# -- models ------------------------------------------------------------------------------------
def _copy(model: str, dst: Path) -> Path:
    dst.mkdir()
    for name in os.listdir(model):
        (dst / name).write_bytes(Path(model, name).read_bytes())
    return dst


def _set_array(model: Path, **arrays) -> None:
    with np.load(model / "trees.npz") as z:
        data = {k: z[k] for k in z.files}
    data.update(arrays)
    np.savez(model / "trees.npz", **data)


def test_a_model_whose_trees_point_outside_themselves_is_refused(good, tmp_path):
    trace, model = good
    m = _copy(model, tmp_path / "m")
    with np.load(m / "trees.npz") as z:
        left = z["left"].copy()
    left[0] = 10**6  # the root's left child: out of range
    _set_array(m, left=left)
    for args in (
        ("evaluate", "--trace", trace, "--model", str(m)),
        ("replay", trace, "--model", str(m)),
    ):
        one_line_error(run_tuner(*args), str(m / "trees.npz"), "outside its tree")


def test_a_model_a_billion_deep_is_refused_before_it_is_walked(good, tmp_path):
    trace, model = good
    m = _copy(model, tmp_path / "m")
    meta = json.loads((m / "model.json").read_text())
    meta["tree_depth"] = 10**9
    (m / "model.json").write_text(json.dumps(meta))
    one_line_error(
        run_tuner("evaluate", "--trace", trace, "--model", str(m), timeout=60),
        str(m / "trees.npz"),
        "depth 1000000000",
    )


def test_a_model_with_nan_parameters_is_neither_saved_nor_loaded(good, tmp_path):
    _, model = good
    m = _copy(model, tmp_path / "m")
    online = json.loads((m / "online.json").read_text())
    online["intercept"] = float("nan")
    (m / "online.json").write_text(json.dumps(online))
    with pytest.raises(TunerError, match="online.json is not usable: intercept"):
        load_model(str(m))
    trees = TreeEnsemble.stump(0, 0.5, 0.0, float("nan"), 0.0)
    with pytest.raises(TunerError, match="trees.npz is malformed"):
        save_model(str(tmp_path / "n"), trees, json.loads(Path(model, "online.json").read_text()),
                   {"window_ms": 100})  # fmt: skip
    assert not (tmp_path / "n").exists()


def test_train_out_is_checked_before_training(good, tmp_path):
    trace, _ = good
    f = tmp_path / "file"
    f.write_text("keep me")
    one_line_error(run_tuner("train", "--trace", trace, "--out", str(f)), "not a directory")
    assert f.read_text() == "keep me"
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("keep me")
    one_line_error(run_tuner("train", "--trace", trace, "--out", str(full)), "already holds")
    one_line_error(
        run_tuner("train", "--trace", trace, "--out", "/proc/tuner-model"), "cannot write"
    )


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    key=st.sampled_from(["feature", "threshold", "left", "right", "leaf", "value", "roots"]),
    pos=st.integers(0, 40),
    value=st.one_of(st.integers(-(2**31), 2**31 - 1), st.floats(allow_nan=True)),
)
def test_mutated_model_arrays_load_cleanly_or_are_refused(good, tmp_path_factory, key, pos,
                                                         value):  # fmt: skip
    """Whatever one array entry is changed to, loading either refuses with a TunerError or
    gives trees that predict finite numbers within their depth."""
    trace, model = good
    m = _copy(model, tmp_path_factory.mktemp("mut") / "m")
    with np.load(m / "trees.npz") as z:
        a = z[key].copy()
    if pos >= len(a):
        return
    try:
        a[pos] = value
    except (OverflowError, ValueError):
        return
    _set_array(m, **{key: a})
    try:
        saved = load_model(str(m))
    except TunerError as e:
        assert "trees.npz" in str(e)
        return
    x = np.random.default_rng(0).random((4, len(saved.meta["features"])))
    assert np.isfinite(saved.trees.predict(x)).all()
