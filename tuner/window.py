"""One window of the agent, typed: what each channel measured, predicted and decided.

The agent's step returns a :class:`WindowRecord`; the decision log, the trace writer, the
metrics endpoint, shadow scoring, replay and evaluation all read it, and nothing downstream
reads a prediction or an entity by position::

    WindowRecord(window, t, closed_ns, mode, fallback, loop_ms)
      └── ChannelWindow per channel ("workers", "cpus", "xdp", "sockets")
            ├── EntityState per entity: load, features, prediction, shares, pid/tid/cpu
            ├── TableOutcome (steered channels): written, changed, shares, table, why
            ├── FlowPins (UDP groups): hot flows and their overrides
            ├── ClientPins (policy.clients): heavy clients and where they are placed
            └── SocketSummary (the sockets channel): connections followed and closed

>>> from tuner.learn.online import Prediction
>>> w = EntityState("worker:0", 0.5, {"runq_frac": 0.1}, Prediction("worker:0", 0.6, 0.5, 0.1),
...                 share=0.25, pid=7)
>>> r = WindowRecord(3, 0.0, 0, "shadow", "", None, (ChannelWindow("workers", (w,)),))
>>> r.channel("workers").loads(), r.channel("cpus") is None
({'worker:0': 0.5}, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tuner.learn.clients import ClientScores
from tuner.learn.online import Prediction


# not frozen: one is made per entity per window, and a frozen dataclass's __init__ (an
# object.__setattr__ per field) costs five times a plain one's; nothing changes it after
@dataclass(slots=True)
class EntityState:
    """One entity in one window."""

    entity: str  # worker:<i>, backend:<i>, cpu:<n>, sock:<id>
    load: float  # observed in this window, CPUs
    features: Mapping[str, float]  # probe features of this window (runq_frac, live_load)
    prediction: Prediction | None  # for the next window
    share: float | None = None  # share of the table in force during this window
    decided: float | None = None  # share chosen for the next window (None: no decision)
    pid: int | None = None  # a worker's process (the first, for a backend host)
    tid: int | None = None  # a worker that is one thread of its process
    cpu: int | None = None  # the one CPU it is pinned to
    cpu_load: float | None = None  # that CPU's load in this window


@dataclass(frozen=True)
class TableOutcome:
    """What a steered channel did with its table this window."""

    written: bool  # the table (or its lease) reached the kernel
    changed: bool  # the policy chose a new table
    shares: tuple[float, ...]
    table: tuple[int, ...] | None  # the new table, when changed
    why: str


@dataclass(frozen=True)
class FlowPins:
    """Hot flows of a UDP group pinned apart (see :mod:`tuner.policy.flows`)."""

    hot: int
    overrides: Mapping[int, int]  # flow hash -> target
    why: str


@dataclass(frozen=True)
class ClientPins:
    """Heavy clients placed apart at their connections' SYN (see :mod:`tuner.policy.clients`)."""

    placed: Mapping[str, int]  # client address -> target
    written: bool  # the kernel has the placement (active mode)
    why: str


@dataclass(frozen=True)
class SocketSummary:
    """The workers' connections followed by the sockets channel."""

    followed: int
    closed: int
    clients: ClientScores | None = None  # the client cost model's scores (policy.clients)


@dataclass(frozen=True)
class ChannelWindow:
    """One channel in one window."""

    name: str
    entities: tuple[EntityState, ...]
    outcome: TableOutcome | None = None
    flows: FlowPins | None = None
    sockets: SocketSummary | None = None
    clients: ClientPins | None = None

    def loads(self) -> dict[str, float]:
        return {e.entity: e.load for e in self.entities}

    def predictions(self) -> dict[str, Prediction]:
        return {e.entity: e.prediction for e in self.entities if e.prediction is not None}


@dataclass(frozen=True)
class WindowRecord:
    """Everything the agent saw and did in one window."""

    window: int  # counted from 1 at the agent's start
    t: float  # wall time when it was decided
    closed_ns: int  # CLOCK_MONOTONIC when the window was closed and read
    mode: str  # shadow | active
    fallback: str  # why the kernel's placement was left in force ("" when it was not)
    loop_ms: float | None  # window closed -> table written
    channels: tuple[ChannelWindow, ...]
    changes: tuple[str, ...] = field(default=())  # worker map changes seen this window

    def channel(self, name: str) -> ChannelWindow | None:
        for c in self.channels:
            if c.name == name:
                return c
        return None

    @property
    def workers(self) -> ChannelWindow:
        """The steered workers (or backend hosts): the first channel."""
        return self.channels[0]
