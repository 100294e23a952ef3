"""The decision log: one JSON line per window (and per mode change), from the typed record.

A window's line holds the agent-wide fields (``t``, ``window``, ``mode``, ``fallback``,
``loop_ms``, worker ``changes``) and one object per channel under its name::

    {"t": ..., "window": 12, "mode": "active", "loop_ms": 0.8,
     "workers": {"loads": {...}, "features": {...}, "in_force": {...},
                 "predictions": {"worker:0": {"load": .., "baseline": .., "p_hot": ..}},
                 "written": true, "changed": true, "shares": [...], "table": [...],
                 "why": "...", "cpu": {"worker:0": 0}, "pid": {...}},
     "cpus": {"loads": {...}, "predictions": {...}},
     "sockets": {"followed": 35, "closed": 4, "hottest": {...}}}

Floats are rounded to 4 digits; lines are written in blocks (flushed every second, and at
once for a mode change or a change of the workers), so the log costs little per window.

>>> from tuner.learn.online import Prediction
>>> from tuner.window import ChannelWindow, EntityState, WindowRecord
>>> s = EntityState("worker:0", 0.51234, {}, Prediction("worker:0", 0.6, 0.5, 0.1), pid=7)
>>> r = WindowRecord(1, 0.0, 0, "shadow", "warming up", None, (ChannelWindow("workers", (s,)),))
>>> e = entry(r)
>>> e["fallback"], e["workers"]["loads"], e["workers"]["predictions"]["worker:0"]["load"]
('warming up', {'worker:0': 0.5123}, 0.6)
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, TextIO

from tuner.learn.online import Prediction
from tuner.window import ChannelWindow, WindowRecord

FLUSH_S = 1.0


def _channel(c: ChannelWindow) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if c.sockets is not None:  # many short-lived entities: a summary, the hottest three
        hottest = sorted(
            (e for e in c.entities if e.prediction is not None),
            key=lambda e: e.prediction.load,
            reverse=True,
        )[:3]
        out.update(
            followed=c.sockets.followed,
            closed=c.sockets.closed,
            hottest={
                e.entity: {"load": e.prediction.load, "p_hot": e.prediction.p_hot} for e in hottest
            },  # fmt: skip
        )
        return out
    out["loads"] = {e.entity: e.load for e in c.entities}
    if any(e.features for e in c.entities):
        out["features"] = {e.entity: dict(e.features) for e in c.entities}
    out["predictions"] = {e.entity: _prediction(p) for e in c.entities
                          if (p := e.prediction) is not None}  # fmt: skip
    if any(e.share is not None for e in c.entities):
        out["in_force"] = {e.entity: e.share for e in c.entities}
    for key in ("pid", "tid", "cpu"):
        values = {e.entity: getattr(e, key) for e in c.entities if getattr(e, key) is not None}
        if values:
            out[key] = values
    if c.outcome is not None:
        o = c.outcome
        out.update(written=o.written, changed=o.changed, shares=list(o.shares), why=o.why)
        if o.table is not None:
            out["table"] = list(o.table)
    if c.flows is not None:
        out["hot_flows"] = c.flows.hot
        out["overrides"] = {str(h): t for h, t in c.flows.overrides.items()}
        out["flows_why"] = c.flows.why
    return out


def _prediction(p: Prediction) -> dict[str, float]:
    out = {"load": p.load, "baseline": p.baseline, "p_hot": p.p_hot}
    if p.horizon_load is not None:
        out.update(horizon_load=p.horizon_load, p_hot_horizon=p.p_hot_horizon)
    return out


def entry(r: WindowRecord) -> dict[str, Any]:
    """The decision-log line of one window, as a dict (rounded)."""
    out: dict[str, Any] = {"t": r.t, "window": r.window, "mode": r.mode}
    if r.fallback:
        out["fallback"] = r.fallback
    if r.loop_ms is not None:
        out["loop_ms"] = r.loop_ms
    if r.changes:
        out["changes"] = list(r.changes)
    for c in r.channels:
        out[c.name] = _channel(c)
    return _rounded(out)


class DecisionLog:
    """Appends decision-log lines to ``path`` in blocks; :meth:`event` lines at once."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._f: TextIO | None = open(path, "a")  # noqa: SIM115 - closed in close()
        self._last_flush = time.monotonic()

    def write(self, record: WindowRecord) -> None:
        if self._f is None:
            return
        self._f.write(json.dumps(entry(record)) + "\n")
        if record.changes or time.monotonic() - self._last_flush >= FLUSH_S:
            self.flush()  # a change of the worker map is written at once, as a mode change

    def event(self, what: dict[str, Any]) -> None:
        """A line that is not a window (a mode change), written at once."""
        if self._f is not None:
            self._f.write(json.dumps(_rounded(what)) + "\n")
            self.flush()

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()
            self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


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
