"""The decision log: one JSON line per window (and per mode change), from the typed record.

A window's line holds the agent-wide fields (``t``, ``window``, ``mode``, ``fallback``,
``loop_ms``, worker ``changes``) and one object per channel under its name::

    {"t": ..., "window": 12, "mode": "active", "loop_ms": 0.8,
     "workers": {"entities": ["worker:0", "worker:1"], "loads": [0.61, 0.2],
                 "features": {"runq_frac": [0.1, 0.0]}, "in_force": [0.5, 0.5],
                 "predictions": {"load": [..], "baseline": [..], "p_hot": [..],
                                 "horizon_load": [..], "p_hot_horizon": [..]},
                 "written": true, "changed": true, "shares": [...], "table": [...],
                 "why": "...", "cpu": [0, 1], "pid": [..]},
     "cpus": {"entities": ["cpu:0", "cpu:1"], "loads": [..], "predictions": {...}},
     "sockets": {"followed": 35, "closed": 4, "hottest": {...}}}

Per-entity fields are columns in the order of ``entities`` (a number that is not there, a
feature not given or an entity without a prediction, is ``null``): a 64-worker line is
about half the size of one object per entity, and built in a fraction of the time.
:func:`by_entity` turns a column back into a dict by entity. Floats are rounded to 4
digits; who each entity is (``pid``, ``tid``, ``cpu``) is in the first line and in every
line where it (or the list of entities) changed, not in every line; lines are written in
blocks (flushed every second, and at once for a mode change or a change of the workers), so
the log costs little per window.

>>> from tuner.learn.online import Prediction
>>> from tuner.window import ChannelWindow, EntityState, WindowRecord
>>> s = EntityState("worker:0", 0.51234, {}, Prediction("worker:0", 0.6, 0.5, 0.1), pid=7)
>>> r = WindowRecord(1, 0.0, 0, "shadow", "warming up", None, (ChannelWindow("workers", (s,)),))
>>> e = entry(r)
>>> e["fallback"], e["workers"]["loads"], by_entity(e["workers"], "predictions")["worker:0"]
('warming up', [0.5123], {'load': 0.6, 'baseline': 0.5, 'p_hot': 0.1})
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any, BinaryIO

import numpy as np
import orjson

from tuner.learn.online import Prediction
from tuner.window import ChannelWindow, WindowRecord

FLUSH_S = 1.0
DIGITS = 4  # floats are rounded to this many digits
IDENTITY = ("pid", "tid", "cpu")  # who an entity is: logged when it changes, not every window
PREDICTED = ("load", "baseline", "p_hot", "horizon_load", "p_hot_horizon")


def _r(x: float) -> float:
    return round(x, DIGITS)


def _channel(c: ChannelWindow) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if c.sockets is not None:  # many short-lived entities: a summary, the hottest three
        hottest = sorted(
            (e for e in c.entities if e.prediction is not None),
            key=lambda e: e.prediction.load,
            reverse=True,
        )[:3]
        if c.sockets.clients is not None:
            sc = c.sockets.clients
            out["clients"] = {"followed": sc.clients, "heavy": sc.heavy}
        out.update(
            followed=c.sockets.followed,
            closed=c.sockets.closed,
            hottest={
                e.entity: {"load": _r(e.prediction.load), "p_hot": _r(e.prediction.p_hot)}
                for e in hottest
            },  # fmt: skip
        )
        return out
    ents = c.entities
    out["entities"] = [e.entity for e in ents]
    # every number of the line's columns in one list, rounded in one call, then cut up
    columns: list[tuple[str, str, int]] = []  # (field, column or "", length)
    flat: list[float | None] = [e.load for e in ents]
    columns.append(("loads", "", len(ents)))
    nan = math.nan
    for k in dict.fromkeys(k for e in ents for k in e.features):  # NaN: not given
        flat += [e.features.get(k, nan) for e in ents]
        columns.append(("features", k, len(ents)))
    preds = [e.prediction for e in ents]
    if any(p is not None for p in preds):
        far = any(p is not None and p.horizon_load is not None for p in preds)
        none = (None,) * len(PREDICTED)
        rows = [none if p is None else _predicted(p) for p in preds]
        for name, col in zip(
            PREDICTED if far else PREDICTED[:3], zip(*rows, strict=True), strict=False
        ):
            flat += col
            columns.append(("predictions", name, len(ents)))
    shares = [e.share for e in ents]
    if any(s is not None for s in shares):
        flat += shares
        columns.append(("in_force", "", len(ents)))
    if c.outcome is not None:
        flat += c.outcome.shares
        columns.append(("shares", "", len(c.outcome.shares)))
    rounded, at = _rounded_list(flat), 0
    for name, col, n in columns:
        part, at = rounded[at : at + n], at + n
        if col:
            out.setdefault(name, {})[col] = part
        else:
            out[name] = part
    for key in IDENTITY:
        values = [getattr(e, key) for e in ents]
        if any(v is not None for v in values):
            out[key] = values
    if c.outcome is not None:
        o = c.outcome
        out.update(written=o.written, changed=o.changed, why=o.why)
        if o.table is not None:
            out["table"] = list(o.table)
    if c.flows is not None:
        out["hot_flows"] = c.flows.hot
        out["overrides"] = {str(h): t for h, t in c.flows.overrides.items()}
        out["flows_why"] = c.flows.why
    if c.clients is not None:
        out["clients"] = {"placed": dict(c.clients.placed), "written": c.clients.written,
                          "why": c.clients.why}  # fmt: skip
    return out


def _rounded_list(values: Sequence[float | None]) -> list[float]:
    """Floats rounded to :data:`DIGITS` all at once (None: NaN, ``null`` in the line).

    >>> _rounded_list([0.123456, None])
    [0.1235, nan]
    """
    return np.round(np.asarray(values, dtype=float), DIGITS).tolist()


def _predicted(p: Prediction) -> tuple[float | None, ...]:
    """A prediction's numbers in :data:`PREDICTED` order."""
    return p.load, p.baseline, p.p_hot, p.horizon_load, p.p_hot_horizon


def by_entity(channel: dict[str, Any], key: str) -> dict[str, Any]:
    """A column of a channel's line by entity: ``loads`` and ``in_force`` give a number per
    entity, ``features`` and ``predictions`` a dict per entity (what a reader of the log,
    a notebook or a test, usually wants).

    >>> line = {"entities": ["w0", "w1"], "loads": [0.5, 0.2],
    ...         "predictions": {"load": [0.6, 0.1], "p_hot": [0.2, 0.0]}}
    >>> by_entity(line, "loads"), by_entity(line, "predictions")["w1"]
    ({'w0': 0.5, 'w1': 0.2}, {'load': 0.1, 'p_hot': 0.0})
    """
    names, value = channel["entities"], channel.get(key)
    if value is None:
        return {}
    if isinstance(value, dict):
        return {n: {k: col[i] for k, col in value.items()} for i, n in enumerate(names)}
    return dict(zip(names, value, strict=True))


def entry(r: WindowRecord) -> dict[str, Any]:
    """The decision-log line of one window, as a dict (rounded)."""
    out: dict[str, Any] = {"t": _r(r.t), "window": r.window, "mode": r.mode}
    if r.fallback:
        out["fallback"] = r.fallback
    if r.loop_ms is not None:
        out["loop_ms"] = _r(r.loop_ms)
    if r.changes:
        out["changes"] = list(r.changes)
    for c in r.channels:
        out[c.name] = _channel(c)
    return out


def line(r: WindowRecord) -> bytes:
    """The decision-log line of one window, as written (JSON, a missing number ``null``).

    >>> from tuner.window import ChannelWindow, EntityState, WindowRecord
    >>> s = EntityState("worker:0", 0.5, {}, None, share=None)
    >>> line(WindowRecord(1, 0.0, 0, "shadow", "", None, (ChannelWindow("workers", (s,)),)))
    b'{"t":0.0,"window":1,"mode":"shadow","workers":{"entities":["worker:0"],"loads":[0.5]}}\\n'
    """
    return _dumps(entry(r))


class DecisionLog:
    """Appends decision-log lines to ``path`` in blocks; :meth:`event` lines at once."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._f: BinaryIO | None = open(path, "ab")  # noqa: SIM115 - closed in close()
        self._last_flush = time.monotonic()
        self._identity: dict[tuple[str, str], Any] = {}  # (channel, key) -> last logged

    def write(self, record: WindowRecord) -> None:
        if self._f is None:
            return
        line = entry(record)
        for c in record.channels:
            for key in IDENTITY:
                ch = line[c.name]
                if key not in ch:
                    continue
                who = (ch["entities"], ch[key])
                if self._identity.get((c.name, key)) == who:
                    del ch[key]
                else:
                    self._identity[(c.name, key)] = who
        self._f.write(_dumps(line))
        if record.changes or time.monotonic() - self._last_flush >= FLUSH_S:
            self.flush()  # a change of the worker map is written at once, as a mode change

    def event(self, what: dict[str, Any]) -> None:
        """A line that is not a window (a mode change), written at once."""
        if self._f is not None:
            self._f.write(_dumps(_rounded(what)))
            self.flush()

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()
            self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _dumps(line: dict[str, Any]) -> bytes:
    """One JSON line (orjson: a 64-worker window's line in a fourteenth of json.dumps' time).

    >>> _dumps({"a": 1, "b": [0.5, None], 3: "x"})
    b'{"a":1,"b":[0.5,null],"3":"x"}\\n'
    """
    return orjson.dumps(line, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
                        | orjson.OPT_APPEND_NEWLINE)  # fmt: skip


def _rounded(x: Any, digits: int = 4) -> Any:
    """``x`` with every float rounded, for the decision log.

    >>> _rounded({"a": [0.123456, 1], "b": {"c": 2.0000001}})
    {'a': [0.1235, 1], 'b': {'c': 2.0}}
    """
    if isinstance(x, float):
        return round(x, digits)
    if isinstance(x, dict):
        return {k: _rounded(v, digits) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_rounded(v, digits) for v in x]
    return x
