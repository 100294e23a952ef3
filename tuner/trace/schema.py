"""The trace format: one row per entity per window, plus metadata in every part.

A trace is a directory (a Parquet dataset) of parts ``part-00000.parquet``,
``part-00001.parquet``, ... Each part is a complete Parquet file with the metadata below under
the key ``tuner`` of its schema, so any one part can be read alone. A part being written is
named ``*.parquet.inprogress`` and renamed when it is closed; readers skip it, so a recording
killed with SIGKILL stays readable up to its last completed part.

Columns (the table in ``docs/traces.md`` is checked against :data:`COLUMNS` by the tests):

>>> [name for name, _, _ in COLUMNS][:5]
['window', 't_end_ns', 'entity', 'pid', 'load']
>>> SCHEMA_VERSION
1
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from typing import Any

SCHEMA_VERSION = 1
META_KEY = b"tuner"

# name, Arrow type name, meaning (with unit)
COLUMNS: list[tuple[str, str, str]] = [
    ("window", "int64", "window number, counted from 0 at the start of the recording"),
    ("t_end_ns", "int64", "end of the window, CLOCK_MONOTONIC nanoseconds"),
    ("entity", "string", "the entity, e.g. `worker:0` (index into the metadata's `pids`)"),
    ("pid", "int32", "process ID of the entity"),
    ("load", "float64", "observed load in this window: (on-CPU + run-queue wait) / window, CPUs"),
    ("runq_frac", "float64", "run-queue wait / window length, CPUs"),
    ("share", "float64", "share of new connections the table in force gave it, 0..1"),
    (
        "predicted",
        "float64",
        "load the model predicted for this window one window earlier (NaN first)",
    ),
    ("pred_load", "float64", "load the model predicts for the next window, CPUs"),
    ("pred_baseline", "float64", "last-value prediction for the next window, CPUs"),
    ("p_hot", "float64", "predicted probability that the next window's load > hot_threshold"),
    ("decided_share", "float64", "share the policy chose for the next window (NaN: no decision)"),
    ("mode", "string", "agent mode: shadow or active"),
    ("written", "bool", "the decision reached the kernel (active mode)"),
    ("fallback", "string", "why the agent left the kernel's default in place, empty if it did not"),
    ("cpu", "int32", "the one CPU the worker is pinned to; -1 when it may run on several"),
    (
        "cpu_load",
        "float64",
        "load of that CPU in this window: every task's on-CPU time + the workers' run-queue "
        "wait, / window (NaN: not pinned, or `policy.by_cpu` off)",
    ),
    (
        "live_load",
        "float64",
        "the part of `load` that came from connections still open at the window's end, CPUs "
        "(NaN: `agent.sockets` off)",
    ),
]

# columns added after the first release: a trace without them reads with these values
OPTIONAL_COLUMNS: dict[str, float] = {
    "cpu": -1,
    "cpu_load": float("nan"),
    "live_load": float("nan"),
}


def arrow_schema(meta: dict[str, Any]):
    """The Arrow schema of a part, with ``meta`` as JSON under :data:`META_KEY`."""
    import pyarrow as pa

    types = {
        "int64": pa.int64(),
        "int32": pa.int32(),
        "float64": pa.float64(),
        "string": pa.string(),
        "bool": pa.bool_(),
    }
    fields = [pa.field(n, types[t]) for n, t, _ in COLUMNS]
    return pa.schema(fields, metadata={META_KEY: json.dumps(meta).encode()})


def base_meta(
    window_ms: int, pids: list[int], probe: dict[str, Any], agent: dict[str, Any]
) -> dict:
    """Metadata of a recording: schema version, host, kernel, probe config, window length.

    >>> m = base_meta(100, [1, 2], {"probes": ["sched"]}, {"model.kind": "linear"})
    >>> m["schema_version"], m["window_ms"], m["pids"]
    (1, 100, [1, 2])
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "host": socket.gethostname(),
        "kernel": platform.release(),
        "window_ms": int(window_ms),
        "pids": list(pids),
        "probe": probe,
        "agent": agent,
        "started": time.time(),
        "writer_pid": os.getpid(),
    }
