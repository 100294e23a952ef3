"""Many nodes' traces as one partitioned dataset, found without reading it.

A fleet's traces live under one root, one trace (a directory of Parquet parts, see
:mod:`tuner.trace.schema`) per recording, partitioned the Hive way so that pyarrow, DuckDB and
Spark read the root as one table with ``node``, ``date`` and ``run`` columns::

    ROOT/node=web-17/date=2026-12-02/run=20261202T140501-4242/part-00000.parquet

:func:`dataset_path` names a new recording's directory; :func:`recordings` lists what a root
holds, with row counts from the Parquet footers only (nothing else is read).

>>> import tempfile, os
>>> from tuner.offline.train import synthetic_trace
>>> root = tempfile.mkdtemp()
>>> for node in ("a", "b"):
...     _ = synthetic_trace(dataset_path(root, node, 0.0, 7), windows=50, entities=2)
>>> [(r.node, r.date, r.rows) for r in recordings(root)]
[('a', '1970-01-01', 100), ('b', '1970-01-01', 100)]
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from tuner.errors import TunerError
from tuner.trace.store import files, filesystem, is_url, join, split_url
from tuner.trace.writer import INPROGRESS

#: what a partition value may hold (a host name, a date, a run's name): no path separator
SAFE = re.compile(r"^[A-Za-z0-9._:@+-]+$")
KEYS = ("node", "date", "run")


@dataclass(frozen=True)
class Recording:
    """One trace of the dataset: its partition values, directory and row count."""

    node: str
    date: str
    run: str
    path: str  # a directory, or a URL in an object store
    rows: int
    rel: str = ""  # node=<n>/date=<d>/run=<r>, relative to the dataset's root


def dataset_path(root: str, node: str, started: float, pid: int) -> str:
    """The directory for a recording by ``node`` started at Unix time ``started`` (UTC date).

    >>> dataset_path("/d", "web-1", 86400.0 * 365, 42)
    '/d/node=web-1/date=1971-01-01/run=19710101T000000-42'
    >>> dataset_path("/d", "a/b", 0.0, 1)
    Traceback (most recent call last):
    ...
    tuner.errors.TunerError: node name 'a/b' cannot name a dataset partition; fix: use \
letters, digits and . _ : @ + - only
    """
    return join(root, dataset_rel(node, started, pid))


def dataset_rel(node: str, started: float, pid: int) -> str:
    """:func:`dataset_path` relative to the dataset's root."""
    if not SAFE.match(node):
        raise TunerError(
            f"node name {node!r} cannot name a dataset partition",
            "use letters, digits and . _ : @ + - only",
        )
    t = time.gmtime(started)
    return os.path.join(
        f"node={node}",
        f"date={time.strftime('%Y-%m-%d', t)}",
        f"run={time.strftime('%Y%m%dT%H%M%S', t)}-{pid}",
    )


def recordings(root: str) -> list[Recording]:
    """The dataset's recordings, sorted by node, date and run, with their completed rows
    (parts still being written are left out, as :func:`~tuner.trace.reader.read_trace`
    leaves them). ``root`` is a directory or an object-store URL (:mod:`.store`). Refuses a
    root that holds no recording, or a part outside the layout."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    if not is_url(root) and not os.path.isdir(root):
        raise TunerError(
            f"dataset {root} is not a directory", "give the --dataset root of `tuner record`"
        )
    names = files(root)
    parts = [n for n in names if n.endswith(".parquet")]
    if not parts:
        busy = any(n.endswith(INPROGRESS) for n in names)
        raise TunerError(
            f"dataset {split_url(root)[0]} holds no completed trace part"
            + (" (only parts in progress)" if busy else ""),
            "record into it with `tuner record --dataset`",
        )
    rows: dict[str, int] = {}
    for part in parts:
        rel = os.path.dirname(part).split(os.sep)
        if len(rel) != len(KEYS) or [p.split("=", 1)[0] for p in rel] != list(KEYS):
            raise TunerError(
                f"{join(root, part)} is not in the dataset's layout node=<n>/date=<d>/run=<r>/",
                "move it there, or train on it alone with --trace",
            )
        rows[os.path.dirname(part)] = 0
    fs, base = filesystem(root)
    for part in parts:
        try:
            (fragment,) = ds.dataset(f"{base}/{part}", format="parquet", filesystem=fs
                                     ).get_fragments()  # fmt: skip
            rows[os.path.dirname(part)] += fragment.count_rows()  # the footer only
        except (pa.ArrowException, OSError, ValueError) as e:
            first = (str(e).splitlines() or [type(e).__name__])[0][:120]
            raise TunerError(
                f"{join(root, part)} is not a readable Parquet file ({first})",
                "re-record it, or remove this part to read the others",
            ) from None
    out = []
    for rel, n in rows.items():
        values = dict(p.split("=", 1) for p in rel.split(os.sep))
        out.append(Recording(values["node"], values["date"], values["run"], join(root, rel), n,
                             rel))  # fmt: skip
    return sorted(out, key=lambda r: (r.node, r.date, r.run))
