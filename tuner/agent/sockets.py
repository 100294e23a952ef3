"""Socket entities: the workers' TCP connections, followed window by window.

A worker's load next window comes from the connections it keeps and from the new ones the
table sends it. The connections it keeps are known at the end of a window: those whose
peer has closed (state CLOSE_WAIT and on) or that closed will send nothing more. So from the
network probe's per-socket frames, :class:`SocketTable` gives each connection a share of its
worker's load (in proportion to the bytes it received) and each worker its ``live_load``:
the part of its load that came from connections still open. The learner takes ``live_load``
as a feature and a socket learner predicts each connection's own next load.

>>> t = SocketTable(WorkerMap.from_pids([7, 8]))
>>> f = lambda sk, state, b: Frame("net", sk, 0, 100, {"bytes_in": b}, {"tgid": "7",
...     "tid": "7", "proto": "tcp", "state": str(state)})
>>> w = t.update([f("sock:a", 1, 300.0), f("sock:b", 8, 100.0)], {0: 0.8, 1: 0.0})
>>> w.loads, w.live_load
({'sock:a': 0.6, 'sock:b': 0.2}, {0: 0.6, 1: 0.0})
>>> sorted(t.live), w.closed
(['sock:a'], ['sock:b'])
>>> t.update([], {0: 0.0, 1: 0.0}).loads   # an open connection that was quiet: load 0
{'sock:a': 0.0}

A connection belongs to the worker of the thread that last read or wrote it: with threads as
workers (a thread-per-core server), to that thread's entity.

>>> t = SocketTable(WorkerMap.from_members([[(7, 8)], [(7, 9)]]))
>>> g = Frame("net", "sock:c", 0, 100, {"bytes_in": 5.0}, {"tgid": "7", "tid": "9",
...     "proto": "tcp", "state": "1"})
>>> t.update([g], {0: 0.1, 1: 0.4}).live_load
{0: 0.1, 1: 0.4}
>>> t.live
{'sock:c': 1}
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tuner.agent.workers import WorkerMap
from tuner.probes.base import Frame

# TCP states (include/net/tcp_states.h) after which a connection brings no more requests:
# FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, CLOSING. (State 0: the probe
# saw no state change of the socket yet, as for a connection accepted before it was
# observed: it is open.)
ENDED_STATES = frozenset({4, 5, 6, 7, 8, 9, 11})
IDLE_WINDOWS = 100  # an open connection quiet this long is forgotten (its close was not seen)


@dataclass(frozen=True)
class SocketWindow:
    """One window of the workers' connections."""

    loads: dict[str, float]  # per connection: its share of its worker's load, CPUs
    live_load: dict[int, float]  # per worker index: load of its connections still open
    closed: list[str]  # connections that closed (or whose peer closed) in this window
    # per worker index: bytes received this window from each client address
    by_client: dict[int, dict[str, float]] = field(default_factory=dict)


@dataclass
class SocketTable:
    """The open TCP connections of ``workers``, each attributed to the worker of the task
    (process, or thread) that last read or wrote it."""

    workers: WorkerMap
    live: dict[str, int] = field(default_factory=dict)  # connection -> worker index
    quiet: dict[str, int] = field(default_factory=dict)  # connection -> windows without data

    def update(self, frames: list[Frame], loads: dict[int, float]) -> SocketWindow:
        """Take one window's frames and the workers' loads (index -> CPUs)."""
        received: dict[str, float] = {}
        closed: list[str] = []
        worker = dict(self.live)
        by_client: dict[int, dict[str, float]] = {}
        for f in frames:
            if f.probe != "net" or not f.entity.startswith("sock:"):
                continue
            if f.labels.get("proto") != "tcp":
                continue
            tgid = int(f.labels.get("tgid", 0))
            i = self.workers.index_of(tgid, int(f.labels.get("tid", tgid)))
            if i is None:
                continue
            worker[f.entity] = i
            got = f.features.get("bytes_in", 0.0)
            received[f.entity] = received.get(f.entity, 0.0) + got
            peer = f.labels.get("raddr")
            if peer and got > 0:
                sent = by_client.setdefault(i, {})
                sent[peer] = sent.get(peer, 0.0) + got
            if int(f.labels.get("state", 0)) not in ENDED_STATES:
                self.live[f.entity] = i
                self.quiet[f.entity] = 0
            else:
                closed.append(f.entity)
                self.live.pop(f.entity, None)
                self.quiet.pop(f.entity, None)
        for sk in list(self.live):
            if sk not in received:
                self.quiet[sk] = self.quiet.get(sk, 0) + 1
                if self.quiet[sk] > IDLE_WINDOWS:
                    del self.live[sk], self.quiet[sk]
        total: dict[int, float] = {}
        for sk, b in received.items():
            total[worker[sk]] = total.get(worker[sk], 0.0) + b
        out: dict[str, float] = {}
        for sk in [*self.live, *closed]:
            i = worker[sk]
            b, t = received.get(sk, 0.0), total.get(i, 0.0)
            out[sk] = loads.get(i, 0.0) * b / t if t > 0 else 0.0
        live_load = {}
        for i, load in loads.items():
            # no bytes seen for a worker: nothing tells its connections apart, keep its load
            t = total.get(i, 0.0)
            gone = sum(received.get(sk, 0.0) for sk in closed if worker[sk] == i)
            live_load[i] = load * (t - gone) / t if t > 0 else load
        return SocketWindow(out, live_load, closed, by_client)
