"""Who the agent steers to: the workers of a reuseport group (processes or threads), or the
backend hosts behind an XDP entry, and what each one's load was in a window.

A :class:`WorkerMap` is a tuple of :class:`WorkerEntity`, in target order: entity ``i`` is
what target ``i`` of the steering table sends new connections to. An entity's members are
the tasks whose time counts as its load: a whole process (``tid`` None: every thread of it),
one thread, or every process of a backend host.

Load is a fraction of one CPU over a window, ``(on-CPU time + run-queue wait) / window``,
from the scheduler probe's per-task frames.

>>> from tuner.probes.base import Frame
>>> m = WorkerMap.from_pids([7, 8])
>>> x = {"oncpu_ns": 40.0, "runq_wait_ns": 10.0}
>>> frames = [Frame("sched", "task:7", 0, 100, x, {"tgid": "7"}),
...           Frame("sched", "task:9", 0, 100, x, {"tgid": "8"})]   # a thread of process 8
>>> m.measure(frames).loads
{'worker:0': 0.5, 'worker:1': 0.5}
>>> threads = WorkerMap.from_members([[(8, 9)], [(8, 10)]])
>>> threads.measure(frames).features
{'worker:0': {'runq_frac': 0.1}, 'worker:1': {'runq_frac': 0.0}}
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tuner.agent.channel import Measurement
from tuner.group import Group
from tuner.probes.base import Frame

Member = tuple[int, int | None]  # (pid, tid): tid None is the whole process


@dataclass(frozen=True)
class WorkerEntity:
    """One target of the table: its entity name, the tasks that make its load, its CPU."""

    entity: str
    members: tuple[Member, ...]
    cpu: int | None = None  # the one CPU all its members are pinned to, else None
    comm: str = ""

    @property
    def pid(self) -> int:
        return self.members[0][0]

    @property
    def tid(self) -> int | None:
        return self.members[0][1] if len(self.members) == 1 else None


def pinned_cpu(members: Iterable[Member]) -> int | None:
    """The one CPU every member may run on, or None.

    >>> pinned_cpu([(os.getpid(), None)]) in (None, *os.sched_getaffinity(0))
    True
    """
    found: set[int | None] = set()
    for pid, tid in members:
        try:
            allowed = os.sched_getaffinity(tid if tid is not None else pid)
        except OSError:
            allowed = set()
        found.add(next(iter(allowed)) if len(allowed) == 1 else None)
    return next(iter(found)) if len(found) == 1 else None


@dataclass(frozen=True)
class WorkerMap:
    """The workers (or backend hosts), in target order."""

    entities: tuple[WorkerEntity, ...]
    kind: str = "worker"  # worker | backend
    group: Group | None = field(default=None, compare=False)  # what discovery found

    @classmethod
    def from_members(
        cls,
        members: Sequence[Sequence[Member]],
        kind: str = "worker",
        cpus: Sequence[int | None] | None = None,
        comms: Sequence[str] | None = None,
        group: Group | None = None,
    ) -> WorkerMap:
        """Entity ``i`` is ``members[i]``; its CPU is ``cpus[i]`` when given (a replay gives
        the recorded ones), else read from the members' affinity now."""
        out = []
        for i, ms in enumerate(members):
            cpu = cpus[i] if cpus is not None else pinned_cpu(ms)
            comm = comms[i] if comms is not None else ""
            out.append(WorkerEntity(f"{kind}:{i}", tuple(ms), cpu, comm))
        return cls(tuple(out), kind, group)

    @classmethod
    def from_pids(cls, pids: Sequence[int], cpus: Sequence[int | None] | None = None) -> WorkerMap:
        """One single-process worker per pid."""
        return cls.from_members([[(p, None)] for p in pids], cpus=cpus)

    @classmethod
    def from_group(cls, group: Group) -> WorkerMap:
        """The workers :func:`tuner.group.discover` found, one per socket."""
        members = [[(s.worker.pid, s.worker.tid)] for s in group.sockets]
        cpus = [s.worker.cpus[0] if len(s.worker.cpus) == 1 else None for s in group.sockets]
        comms = [s.worker.comm for s in group.sockets]
        return cls.from_members(members, cpus=cpus, comms=comms, group=group)

    def pids(self) -> list[int]:
        """Every process with a member, once each, in order."""
        return list(dict.fromkeys(p for e in self.entities for p, _ in e.members))

    def names(self) -> list[str]:
        return [e.entity for e in self.entities]

    @functools.cached_property
    def identities(self) -> dict[str, tuple[int, int | None, int | None, None]]:
        """Each entity's pid, tid and CPU (and no CPU load), made once per map.

        >>> WorkerMap.from_pids([7, 8], cpus=[0, None]).identities["worker:1"]
        (8, None, None, None)
        """
        return {e.entity: (e.pid, e.tid, e.cpu, None) for e in self.entities}

    @functools.cached_property
    def _lookup(self) -> tuple[dict[int, int], dict[int, int], dict[str, WorkerEntity]]:
        """Entity index by member pid (whole processes) and by member tid (threads), and each
        entity by name: made once per map, used every window."""
        by_pid: dict[int, int] = {}
        by_tid: dict[int, int] = {}
        for i, e in enumerate(self.entities):
            for pid, tid in e.members:
                if tid is None:
                    by_pid[pid] = i
                else:
                    by_tid[tid] = i
        return by_pid, by_tid, {e.entity: e for e in self.entities}

    @functools.cached_property
    def _frame_index(self) -> dict[str, int]:
        """Each scheduler frame's entity (``task:<tid>``) seen so far -> the index of the
        worker it belongs to, -1 for none: a task's thread group does not change, so each is
        worked out once per map instead of once per window."""
        return {}

    def index_of(self, pid: int, tid: int) -> int | None:
        """The index of the entity whose task (thread ``tid`` of process ``pid``) this is:
        the entity of that thread, else of the whole process; None for neither.

        >>> m = WorkerMap.from_members([[(8, 9)], [(8, 10)], [(11, None)]])
        >>> m.index_of(8, 10), m.index_of(11, 12), m.index_of(8, 8)
        (1, 2, None)
        """
        by_pid, by_tid, _ = self._lookup
        i = by_tid.get(tid)
        return by_pid.get(pid) if i is None else i

    def _index_of(self, f: Frame) -> int:
        if not f.entity.startswith("task:"):
            return -1
        i = self.index_of(int(f.labels.get("tgid", 0)), int(f.entity[5:]))
        return -1 if i is None else i

    def entity(self, name: str) -> WorkerEntity:
        """The entity called ``name`` (``worker:3``)."""
        return self._lookup[2][name]

    def measure(self, frames: list[Frame]) -> Measurement:
        """Each entity's load and run-queue share this window; an entity without frames was
        idle (load 0)."""
        index = self._frame_index
        n = len(self.entities)
        busy, wait = [0.0] * n, [0.0] * n
        lo, hi = [0] * n, [1] * n
        seen = [False] * n
        for f in frames:
            if f.probe != "sched":
                continue
            i = index.get(f.entity)
            if i is None:
                i = index[f.entity] = self._index_of(f)
            if i < 0:
                continue
            x = f.features
            q = x.get("runq_wait_ns", 0.0)
            busy[i] += x.get("oncpu_ns", 0.0) + q
            wait[i] += q
            if seen[i]:
                lo[i], hi[i] = min(lo[i], f.window_start), max(hi[i], f.window_end)
            else:
                lo[i], hi[i], seen[i] = f.window_start, f.window_end, True
        loads, features = {}, {}
        for i, e in enumerate(self.entities):
            length = max(hi[i] - lo[i], 1)
            loads[e.entity] = busy[i] / length
            features[e.entity] = {"runq_frac": wait[i] / length}
        return Measurement(loads, features)

    def cpus(self) -> list[int]:
        """The CPUs the workers are pinned to, each once, sorted."""
        return sorted({e.cpu for e in self.entities if e.cpu is not None})


def cpu_loads(frames: list[Frame], cpus: Sequence[int]) -> Measurement:
    """Per CPU of ``cpus``, ``cpu:<n>``: (on-CPU time of every task + run-queue wait of the
    observed ones) / window, from the scheduler probe's CPU frames. No frame: idle, 0.

    >>> x = {"oncpu_ns": 60.0, "runq_wait_ns": 30.0}
    >>> cpu_loads([Frame("sched", "cpu:1", 0, 100, x, {})], [0, 1]).loads
    {'cpu:0': 0.0, 'cpu:1': 0.9}
    """
    out = {f"cpu:{c}": 0.0 for c in cpus}
    for f in frames:
        if f.probe == "sched" and f.entity in out:
            busy = f.features.get("oncpu_ns", 0.0) + f.features.get("runq_wait_ns", 0.0)
            out[f.entity] += busy / max(f.window_end - f.window_start, 1)
    return Measurement(out, {e: {} for e in out})
