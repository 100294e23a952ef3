"""Property tests of the parsers that take outside input (issue 18, beyond the list): whatever
a config, a spec or a trace holds, tuner answers with a valid object or a TunerError, never
another exception."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuner.agent.config import SCHEMA, AgentConfig
from tuner.errors import TunerError
from tuner.experiment.spec import ExperimentSpec
from tuner.trace.reader import read_trace
from tuner.trace.schema import COLUMNS, arrow_schema

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),  # fmt: skip
    max_leaves=8,
)
KEYS = st.sampled_from(sorted(SCHEMA)) | st.text(max_size=12)


def _nest(flat: dict) -> dict:
    out: dict = {}
    for key, v in flat.items():
        sec, _, name = key.partition(".")
        if name:
            section = out.setdefault(sec, {})
            if isinstance(section, dict):
                section[name] = v
        else:
            out[sec] = v
    return out


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=6))
def test_agent_config_is_valid_or_refused(flat):
    try:
        cfg = AgentConfig.from_dict(_nest(flat))
    except TunerError as e:
        assert "\n" not in str(e)
        return
    for key, (typ, _, _, _) in SCHEMA.items():
        assert isinstance(cfg.get(key), typ)


SPEC_KEYS = st.sampled_from(
    ["workload.rate", "workload.profile", "server.workers", "server.cpus", "arms", "repeats",
     "duration_s", "cluster.clients", "workload.service", "tuner.policy"]
) | st.text(max_size=10)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(SPEC_KEYS, VALUES, max_size=5))
def test_experiment_spec_is_valid_or_refused(flat):
    try:
        ExperimentSpec.from_dict(_nest(flat))
    except TunerError as e:
        assert "\n" not in str(e)


def _column(name: str, typ: str, n: int, data) -> pa.Array:
    if typ == "float64":
        xs = st.floats(allow_nan=True, allow_infinity=True) | st.floats(0, 2)
        return pa.array(data.draw(st.lists(xs, min_size=n, max_size=n)), pa.float64())
    if typ in ("int64", "int32"):
        lo, hi = (-5, 12) if name == "window" else (-(2**31), 2**31 - 1)
        return pa.array(data.draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)),
                        pa.int64() if typ == "int64" else pa.int32())  # fmt: skip
    if typ == "bool":
        return pa.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    return pa.array(data.draw(st.lists(st.text(max_size=6), min_size=n, max_size=n)))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.integers(1, 12), meta=VALUES, data=st.data())
def test_trace_reads_or_is_refused(tmp_path_factory, n, meta, data):
    d = tmp_path_factory.mktemp("t")
    schema = arrow_schema({"schema_version": 1, "window_ms": 100, "pids": []})
    if data.draw(st.booleans()):  # sometimes metadata that is anything at all
        schema = schema.with_metadata({b"tuner": json.dumps(meta).encode()})
    cols = {name: _column(name, typ, n, data) for name, typ, _ in COLUMNS}
    pq.write_table(pa.Table.from_pydict(cols, schema=schema), os.path.join(d, "part-0.parquet"))
    try:
        t = read_trace(str(d))
    except TunerError as e:
        assert "\n" not in str(e)
        return
    loads = t.columns["load"]
    assert np.isfinite(loads).all() and (loads >= 0).all()
    assert t.matrix("load").shape == (t.windows, len(t.entities))
