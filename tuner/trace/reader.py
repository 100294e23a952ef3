"""Read a trace back, refusing bad input with one line that names the file and the problem.

>>> import tempfile, os
>>> from tuner.trace.writer import TraceWriter
>>> d = os.path.join(tempfile.mkdtemp(), "t.parquet")
>>> with TraceWriter(d, {"window_ms": 100, "pids": [7, 8]}) as w:
...     w.add_columns({"window": [0, 0, 1, 1], "entity": ["worker:0", "worker:1"] * 2,
...                    "load": [0.5, 0.2, 0.5, 0.2]})
>>> t = read_trace(d)
>>> t.windows, t.entities, t.meta["window_ms"], t.columns["load"].tolist()
(2, ['worker:0', 'worker:1'], 100, [0.5, 0.2, 0.5, 0.2])
>>> try:
...     read_trace("/no/such/trace")
... except TunerError as e:
...     print(e)
trace /no/such/trace not found; fix: give the --out path of `tuner record`
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from tuner.errors import TunerError
from tuner.trace.schema import (
    COLUMNS,
    META_KEY,
    OPTIONAL_COLUMNS,
    SCHEMA_VERSION,
    arrow_schema,
)
from tuner.trace.writer import INPROGRESS


@dataclass
class Trace:
    """A trace in memory: ``columns`` maps each column of :data:`COLUMNS` to a numpy array."""

    path: str
    meta: dict[str, Any]
    columns: dict[str, np.ndarray]
    parts: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # parts still in progress (a crash)

    @cached_property
    def windows(self) -> int:
        w = self.columns["window"]
        return int(w.max()) + 1 if len(w) else 0

    @cached_property
    def entities(self) -> list[str]:
        return list(dict.fromkeys(self.columns["entity"].tolist()))

    @cached_property
    def _entity_index(self) -> np.ndarray:
        """Each row's entity as an index into :attr:`entities` (worked out once)."""
        index = {e: i for i, e in enumerate(self.entities)}
        return np.array([index[e] for e in self.columns["entity"].tolist()], dtype=np.int64)

    def matrix(self, column: str) -> np.ndarray:
        """``column`` as a windows x entities array (NaN where an entity has no row)."""
        out = np.full((self.windows, len(self.entities)), np.nan)
        out[self.columns["window"], self._entity_index] = self.columns[column]
        return out

    def per_window(self, column: str) -> list:
        """The value of ``column`` in each window (its first row), e.g. ``mode``."""
        out: list = [None] * self.windows
        for w, v in zip(
            self.columns["window"].tolist(), self.columns[column].tolist(), strict=True
        ):
            if out[w] is None:
                out[w] = v
        return out


def _parts(path: str) -> tuple[list[str], list[str]]:
    denied = TunerError(
        f"cannot read trace {path}: permission denied", "run as a user who may read it"
    )
    try:
        os.stat(path)
    except PermissionError:
        raise denied from None
    except OSError:
        raise TunerError(
            f"trace {path} not found", "give the --out path of `tuner record`"
        ) from None
    if not os.access(path, os.R_OK | (0 if os.path.isfile(path) else os.X_OK)):
        raise denied
    if os.path.isfile(path):
        return [path], []
    parts = sorted(glob.glob(os.path.join(path, "*.parquet")))
    busy = sorted(glob.glob(os.path.join(path, "*.parquet" + INPROGRESS)))
    if not parts:
        why = "only a part still being written (the recorder was killed before it closed one)"
        raise TunerError(
            f"trace {path} holds no completed part" + (f": {why}" if busy else ""),
            "record for longer, or stop the recorder with Ctrl-C so it closes its part",
        )
    return parts, busy


def _read_part(part: str) -> tuple[dict[str, Any], Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(part)
    except (pa.ArrowException, OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        first = re.sub(r"^Could not open Parquet input source '[^']*': ", "", first)
        first = first.split(". Either")[0].rstrip(".")
        raise TunerError(
            f"{part} is not a readable Parquet file (truncated or corrupt: {first})",
            "re-record it, or remove this part to read the others",
        ) from e
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise TunerError(
            f"{part} is not a tuner trace (no tuner metadata)", "record it with `tuner record`"
        )
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise TunerError(f"{part} has corrupt tuner metadata", "re-record it") from e
    if not isinstance(meta, dict):
        raise TunerError(
            f"{part} has tuner metadata that is not a JSON object ({type(meta).__name__})",
            "re-record it",
        )
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise TunerError(
            f"{part} has trace schema version {version}; this tuner reads version {SCHEMA_VERSION}",
            "record it again with this version of tuner",
        )
    missing = [n for n, _, _ in COLUMNS if n not in table.column_names]
    if [n for n in missing if n not in OPTIONAL_COLUMNS]:
        raise TunerError(f"{part} lacks the column(s) {', '.join(missing)}", "re-record it")
    types = arrow_schema({})
    for name in missing:  # an older trace: fill the later columns with their defaults
        column = pa.array(np.full(table.num_rows, OPTIONAL_COLUMNS[name]), types.field(name).type)
        table = table.append_column(name, column)
    _check_values(part, table)
    return meta, table


#: windows a trace may number (10^8 windows of 100 ms are 116 days)
MAX_WINDOW = 100_000_000


def _check_values(part: str, table: Any) -> None:
    """Refuse values no recording writes: a load that is not a finite number >= 0, an
    infinite number in any column, a window number below 0 or beyond :data:`MAX_WINDOW`.
    The message names the file, the column and the row."""

    def refuse(column: str, row: int, what: str) -> TunerError:
        return TunerError(
            f"{part}: column {column!r}, row {row}: {what}",
            "re-record the trace, or remove this part to read the others",
        )

    window = table.column("window").to_numpy(zero_copy_only=False)
    bad = np.flatnonzero((window < 0) | (window > MAX_WINDOW))
    if bad.size:
        raise refuse("window", int(bad[0]), f"window number {int(window[bad[0]])} is not in "
                     f"[0, {MAX_WINDOW}]")  # fmt: skip
    for name, typ, _ in COLUMNS:
        if typ != "float64":
            continue
        x = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        bad = np.flatnonzero(np.isinf(x) | ((np.isnan(x) | (x < 0)) if name == "load" else False))
        if bad.size:
            raise refuse(name, int(bad[0]), f"{x[bad[0]]} is not a finite load >= 0"
                         if name == "load" else f"{x[bad[0]]} is not a finite number")  # fmt: skip


def read_trace(path: str) -> Trace:
    """Read every completed part of the trace at ``path`` (a directory or one part)."""
    import pyarrow as pa
    import pyarrow.compute  # noqa: F401 - pa.compute

    parts, busy = _parts(path)
    metas, tables = zip(*(_read_part(p) for p in parts), strict=True)
    table = pa.concat_tables(tables)
    if table.num_rows == 0:
        raise TunerError(f"trace {path} is empty: no windows recorded", "record for longer")
    last = int(pa.compute.max(table.column("window")).as_py())
    held = len(pa.compute.unique(table.column("window")))
    if last + 1 > 4 * held + 10_000:  # a missing part or two leave a gap; not this
        raise TunerError(
            f"trace {path} numbers its windows up to {last} but holds only {held} windows",
            "window numbers must count up from 0 with few gaps: re-record it",
        )
    columns = {n: table.column(n).to_numpy(zero_copy_only=False) for n, _, _ in COLUMNS}
    order = np.lexsort((np.arange(table.num_rows), columns["window"]))
    columns = {n: a[order] for n, a in columns.items()}
    meta = dict(metas[0])
    meta.pop("part", None)
    return Trace(path, meta, columns, list(parts), busy)
