"""Write a trace while the agent runs: rows buffered per window, parts rolled over.

>>> import tempfile, os
>>> from tuner.learn.online import Prediction
>>> from tuner.window import ChannelWindow, EntityState, WindowRecord
>>> d = os.path.join(tempfile.mkdtemp(), "t.parquet")
>>> w0 = EntityState("worker:0", 0.5, {"runq_frac": 0.1}, Prediction("worker:0", 0.5, 0.5, 0.1),
...                  share=1.0, pid=7)
>>> with TraceWriter(d, {"window_ms": 100, "pids": [7]}) as w:
...     for i in range(3):
...         w.add(WindowRecord(i + 1, 0.0, 1_000 * i, "shadow", "", None,
...                            (ChannelWindow("workers", (w0,)),)))
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
from tuner.window import WindowRecord

INPROGRESS = ".inprogress"
DEFAULTS = {"int64": -1, "int32": -1, "float64": math.nan, "string": "", "bool": False}


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

    def add(self, record: WindowRecord) -> None:
        """Add one window: the workers' channel of what :meth:`Agent.step` returned
        (:class:`~tuner.window.WindowRecord`), one row per worker."""
        nan = math.nan
        workers = record.workers
        outcome = workers.outcome
        c = self._cols
        for e in workers.entities:
            p = e.prediction
            c["window"].append(self.windows)
            c["t_end_ns"].append(int(record.closed_ns))
            c["entity"].append(e.entity)
            c["pid"].append(e.pid if e.pid is not None else -1)
            c["load"].append(float(e.load))
            c["runq_frac"].append(float(e.features.get("runq_frac", nan)))
            c["share"].append(float(e.share) if e.share is not None else nan)
            c["predicted"].append(self._last_pred.get(e.entity, nan))
            c["pred_load"].append(p.load if p is not None else nan)
            c["pred_baseline"].append(p.baseline if p is not None else nan)
            c["p_hot"].append(p.p_hot if p is not None else nan)
            c["decided_share"].append(float(e.decided) if e.decided is not None else nan)
            c["mode"].append(record.mode)
            c["written"].append(bool(outcome.written) if outcome is not None else False)
            c["fallback"].append(record.fallback)
            c["cpu"].append(e.cpu if e.cpu is not None else -1)
            c["cpu_load"].append(float(e.cpu_load) if e.cpu_load is not None else nan)
            c["live_load"].append(float(e.features.get("live_load", nan)))
            self._last_pred[e.entity] = p.load if p is not None else nan
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

    def add_columns(self, columns: dict[str, Any]) -> None:
        """Add many rows at once, column by column (arrays of one length; a column not given
        takes its default: NaN, -1, "" or False). For traces made by programs: written as one
        row group, without a Python object per value."""
        import numpy as np
        import pyarrow as pa

        unknown = set(columns) - set(self._cols)
        if unknown:
            raise TunerError(f"no trace column named {sorted(unknown)[0]!r}")
        self.flush()
        n = len(columns["window"])
        data = {
            name: np.asarray(columns[name]) if name in columns else np.full(n, DEFAULTS[typ])
            for name, typ, _ in COLUMNS
        }
        self._open_part()
        self._writer.write_table(pa.Table.from_pydict(data, schema=self._writer.schema))
        self.rows += n
        self.windows = int(np.max(data["window"], initial=-1)) + 1
        if not self._part_started:
            self._part_started = time.monotonic()
        self.flush()

    def flush(self) -> None:
        """Write the buffered windows as a row group; close the part when it is full."""
        import pyarrow as pa

        if self._buffered:
            self._open_part()
            table = pa.Table.from_pydict(self._cols, schema=self._writer.schema)
            self._writer.write_table(table)
            self._cols = {n: [] for n in self._cols}
            self._buffered = 0
        if self._writer is not None and (
            os.path.getsize(self._part_path + INPROGRESS) >= self.part_bytes
            or time.monotonic() - self._part_started >= self.part_seconds
        ):
            self._close_part()

    def _open_part(self) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            name = f"part-{len(self.parts):05d}.parquet"
            self._part_path = os.path.join(self.path, name)
            schema = arrow_schema({**self.meta, "part": len(self.parts)})
            self._writer = pq.ParquetWriter(self._part_path + INPROGRESS, schema)

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
