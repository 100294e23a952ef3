"""Write a trace while the agent runs: rows buffered per window, parts rolled over.

>>> import tempfile, os
>>> d = os.path.join(tempfile.mkdtemp(), "t.parquet")
>>> entry = {"mode": "shadow", "written": False, "loads": {"worker:0": 0.5},
...          "features": {"worker:0": {"runq_frac": 0.1}}, "in_force": [1.0],
...          "predictions": {"worker:0": [0.5, 0.5, 0.1]}, "shares": [1.0]}
>>> with TraceWriter(d, {"window_ms": 100, "pids": [7]}) as w:
...     for i in range(3):
...         w.add(entry, 1_000 * i)
>>> sorted(os.listdir(d)), w.rows
(['part-00000.parquet'], 3)
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from tuner.errors import TunerError
from tuner.trace.schema import COLUMNS, SCHEMA_VERSION, arrow_schema

INPROGRESS = ".inprogress"


class TraceWriter:
    """Appends one row per entity per window to a trace directory ``path``.

    Rows are written as a row group every ``group_windows`` windows; a part is closed (and
    renamed from ``*.inprogress``) when it reaches ``part_mb`` megabytes or ``part_seconds``
    seconds, whichever comes first. So a SIGKILL loses at most the part being written.
    """

    def __init__(
        self,
        path: str,
        meta: dict[str, Any],
        part_mb: float = 64.0,
        part_seconds: float = 30.0,
        group_windows: int = 50,
    ) -> None:
        self.path = path
        self.meta = {"schema_version": SCHEMA_VERSION, **meta}
        self.part_bytes = int(part_mb * 1e6)
        self.part_seconds = part_seconds
        self.group_windows = group_windows
        self.rows = 0
        self.windows = 0
        self.parts: list[str] = []
        self._cols: dict[str, list] = {n: [] for n, _, _ in COLUMNS}
        self._buffered = 0
        self._writer: Any = None
        self._part_path = ""
        self._part_started = 0.0
        self._last_pred: dict[str, float] = {}
        if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
            raise TunerError(
                f"trace {path} already exists", "choose a new --out path or remove the old one"
            )
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise TunerError(f"cannot create trace {path}: {e.strerror}", "check the path") from e

    def add(self, entry: dict[str, Any], t_end_ns: int) -> None:
        """Add one window: ``entry`` is what :meth:`tuner.agent.loop.Agent.step` returned."""
        loads = entry.get("loads", {})
        feats = entry.get("features", {})
        preds = entry.get("predictions", {})
        in_force = entry.get("in_force") or []
        decided = entry.get("shares")
        pids = self.meta.get("pids", [])
        cpu_of = self.meta.get("worker_cpus") or []
        cpu_loads = entry.get("cpu_loads") or {}
        c = self._cols
        for i, (e, load) in enumerate(loads.items()):
            p = preds.get(e, [math.nan, math.nan, math.nan])
            c["window"].append(self.windows)
            c["t_end_ns"].append(int(t_end_ns))
            c["entity"].append(e)
            c["pid"].append(pids[i] if i < len(pids) else -1)
            c["load"].append(float(load))
            c["runq_frac"].append(float(feats.get(e, {}).get("runq_frac", math.nan)))
            c["share"].append(float(in_force[i]) if i < len(in_force) else math.nan)
            c["predicted"].append(self._last_pred.get(e, math.nan))
            c["pred_load"].append(float(p[0]))
            c["pred_baseline"].append(float(p[1]))
            c["p_hot"].append(float(p[2]))
            c["decided_share"].append(
                float(decided[i]) if decided and i < len(decided) else math.nan
            )
            c["mode"].append(str(entry.get("mode", "")))
            c["written"].append(bool(entry.get("written", False)))
            c["fallback"].append(str(entry.get("fallback", "")))
            cpu = cpu_of[i] if i < len(cpu_of) and cpu_of[i] is not None else -1
            c["cpu"].append(cpu)
            c["cpu_load"].append(float(cpu_loads.get(f"cpu:{cpu}", math.nan)))
            c["live_load"].append(float(feats.get(e, {}).get("live_load", math.nan)))
            self._last_pred[e] = float(p[0])
            self.rows += 1
        self.windows += 1
        self._buffered += 1
        if not self._part_started:
            self._part_started = time.monotonic()
        if (
            self._buffered >= self.group_windows
            or time.monotonic() - self._part_started >= self.part_seconds
        ):
            self.flush()

    def flush(self) -> None:
        """Write the buffered windows as a row group; close the part when it is full."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._buffered:
            if self._writer is None:
                name = f"part-{len(self.parts):05d}.parquet"
                self._part_path = os.path.join(self.path, name)
                schema = arrow_schema({**self.meta, "part": len(self.parts)})
                self._writer = pq.ParquetWriter(self._part_path + INPROGRESS, schema)
            table = pa.Table.from_pydict(self._cols, schema=self._writer.schema)
            self._writer.write_table(table)
            self._cols = {n: [] for n in self._cols}
            self._buffered = 0
        if self._writer is not None and (
            os.path.getsize(self._part_path + INPROGRESS) >= self.part_bytes
            or time.monotonic() - self._part_started >= self.part_seconds
        ):
            self._close_part()

    def _close_part(self) -> None:
        self._writer.close()
        os.replace(self._part_path + INPROGRESS, self._part_path)
        self.parts.append(self._part_path)
        self._writer = None
        self._part_started = 0.0

    def close(self) -> None:
        """Write what is buffered and close the last part."""
        self.flush()
        if self._writer is not None:
            self._close_part()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
