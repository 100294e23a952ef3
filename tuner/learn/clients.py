"""What a client's connections cost, learned online from the workers' loads: the prediction a
reactive rule cannot make, because it is known when a connection arrives, before any load.

Each window, each worker's load (CPUs) is modelled as the bytes its connections received
from each client times that client's cost per byte::

    load[w] = sum over clients a of  bytes[w, a] * cost[a]

No single window tells the clients on one worker apart, but connections re-open and land on
other workers with other neighbours, so over windows the system becomes determined. The
costs are fitted online by normalised least mean squares (one step per worker and window,
costs kept non-negative), which needs no matrix over all clients and costs O(bytes seen).

A client is *heavy* when the expected load per window of one of its connections (its cost
per byte times the bytes per window a connection of it sends) is at least ``factor`` times
the median of the clients seen for at least ``min_windows`` windows, and at least the
geometric mean of that median and the highest (a light client that shared workers with a
much heavier one carries part of its cost for a while). So a client is heavy by dear
requests or by many of them: heavy hitters are clients too.

Scoring (:meth:`ClientCosts.scores`): each window, before learning from it, the model's
account of each worker's load from the bytes it received is compared with the account that
does not know who sent them (one cost per byte for everyone, an average over recent
windows). ``mae`` below ``baseline_mae`` says that knowing the client explains the load.

>>> c = ClientCosts(rate=0.5, min_windows=1, factor=2.0)
>>> pairs = [("1", "2", "3", "4"), ("1", "3", "2", "4"), ("1", "4", "2", "3")]
>>> for _ in range(60):   # client 1 costs 0.8 CPU a window, the others 0.1
...     for a, b, c_, d in pairs:
...         c.update([WorkerBytes(0.9, {f"10.0.0.{a}": 100.0, f"10.0.0.{b}": 100.0}),
...                   WorkerBytes(0.2, {f"10.0.0.{c_}": 100.0, f"10.0.0.{d}": 100.0})])
>>> sorted(c.heavy())
['10.0.0.1']
>>> round(c.heavy()["10.0.0.1"], 2)   # load per window of one of its connections
0.8
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MAX_CLIENTS = 4096  # clients followed; the least recently seen are forgotten past it
SCORED_WINDOWS = 300  # scores are over the last this many windows
EPS = 1e-12


@dataclass(frozen=True)
class WorkerBytes:
    """One worker in one window: its load and the bytes each client's connections sent it."""

    load: float  # CPUs
    received: Mapping[str, float]  # client address -> bytes


@dataclass(frozen=True)
class ClientScores:
    """The client model's account of the workers' loads against one cost for everyone."""

    windows: int  # windows scored
    mae: float | None  # mean absolute error per worker, CPUs (None: nothing scored)
    baseline_mae: float | None
    clients: int  # clients followed
    heavy: int  # clients heavy now


class ClientCosts:
    """Each client's cost per byte, learned online (see the module text).

    ``rate``: the step of the normalised LMS update, in (0, 1]; ``min_windows``: windows a
    client must have been seen in before it can be called heavy; ``factor``: how many times
    the median client's expected load of a connection makes a client heavy (see
    :meth:`heavy`).
    """

    def __init__(self, rate: float = 0.2, min_windows: int = 5, factor: float = 3.0) -> None:
        if not 0 < rate <= 1:
            raise ValueError(f"rate must be in (0, 1]; got {rate}")
        self.rate, self.min_windows, self.factor = rate, min_windows, factor
        self._index: dict[str, int] = {}
        self._cost = np.zeros(64)
        self._bytes = np.zeros(64)  # bytes per window per connection, smoothed
        self._seen = np.zeros(64, dtype=np.int64)  # windows with bytes
        self._last = np.zeros(64, dtype=np.int64)  # last window with bytes
        self._window = 0
        self._per_byte = 0.0  # everyone's cost per byte, smoothed (the baseline)
        self._errors: deque[tuple[float, float]] = deque(maxlen=SCORED_WINDOWS)
        self._heavy: dict[str, float] = {}  # as of the last update (placement and scores read it)

    def _slots(self, addrs: Sequence[str]) -> np.ndarray:
        out = np.empty(len(addrs), dtype=np.int64)
        for k, a in enumerate(addrs):
            i = self._index.get(a)
            if i is None:
                i = self._index[a] = self._new_slot()
            out[k] = i
        return out

    def _new_slot(self) -> int:
        n = len(self._index)
        if n >= MAX_CLIENTS:  # forget the least recently seen client, reuse its slot
            addr = min(self._index, key=lambda a: self._last[self._index[a]])
            i = self._index.pop(addr)
        elif n >= self._cost.size:
            grow = self._cost.size
            self._cost, self._bytes = np.append(self._cost, np.zeros(grow)), np.append(
                self._bytes, np.zeros(grow))  # fmt: skip
            self._seen = np.append(self._seen, np.zeros(grow, dtype=np.int64))
            self._last = np.append(self._last, np.zeros(grow, dtype=np.int64))
            i = n
        else:
            i = n
        # a new client starts at everyone's cost: it is not heavy until shown to be
        self._cost[i], self._bytes[i], self._seen[i] = self._per_byte, 0.0, 0
        return i

    def update(self, workers: Sequence[WorkerBytes]) -> None:
        """Score, then learn from one window of the workers."""
        self._window += 1
        rows = []
        total_load = total_bytes = 0.0
        for w in workers:
            addrs = [a for a, b in w.received.items() if b > 0]
            if not addrs:
                continue
            idx = self._slots(addrs)
            x = np.fromiter((w.received[a] for a in addrs), float, len(addrs))
            rows.append((idx, x, w.load))
            total_load += w.load
            total_bytes += float(x.sum())
        if not rows:
            return
        if self._per_byte > 0:  # score before learning
            err = sum(abs(y - float(self._cost[i] @ x)) for i, x, y in rows) / len(rows)
            base = sum(abs(y - self._per_byte * float(x.sum())) for _, x, y in rows) / len(rows)
            self._errors.append((err, base))
        g = total_load / total_bytes
        self._per_byte = g if self._per_byte == 0 else 0.9 * self._per_byte + 0.1 * g
        for idx, x, y in rows:
            c = self._cost[idx]
            e = y - float(c @ x)
            self._cost[idx] = np.maximum(c + self.rate * e * x / (EPS + float(x @ x)), 0.0)
            self._seen[idx] += 1
            self._last[idx] = self._window
            b = self._bytes[idx]
            self._bytes[idx] = np.where(b > 0, 0.8 * b + 0.2 * x, x)
        self._heavy = self._find_heavy()

    def heavy(self) -> dict[str, float]:
        """Clients a connection of which is expected to cost at least ``factor`` times the
        median client's, with that expected load per window (as of the last :meth:`update`)."""
        return self._heavy

    def _find_heavy(self) -> dict[str, float]:
        known = [(a, i) for a, i in self._index.items() if self._seen[i] >= self.min_windows]
        if len(known) < 2:
            return {}
        idx = np.array([i for _, i in known])
        loads = self._cost[idx] * self._bytes[idx]  # of one connection, per window
        median = float(np.median(loads))
        if median <= 0:
            return {}
        # and at least halfway (geometrically) from the median to the highest: a light client
        # that shared workers with a much heavier one carries some of its cost for a while
        floor = max(self.factor * median, float(np.sqrt(median * loads.max())))
        return {a: float(load) for (a, _), load in zip(known, loads, strict=True) if load >= floor}

    def cost(self, addr: str) -> float | None:
        """A client's cost per byte (None: never seen)."""
        i = self._index.get(addr)
        return None if i is None else float(self._cost[i])

    def scores(self) -> ClientScores:
        """The model's and the baseline's mean absolute error over recent windows."""
        n = len(self._errors)
        mae = base = None
        if n:
            arr = np.array(self._errors)
            mae, base = float(arr[:, 0].mean()), float(arr[:, 1].mean())
        return ClientScores(n, mae, base, len(self._index), len(self._heavy))
