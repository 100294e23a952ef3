"""Workers that change: an nginx reload, a crashed worker respawned, a thread pool that grows.

Every :data:`GONE_S` seconds the agent checks that every task it steers to still exists
(one ``stat`` per worker; meanwhile a worker's closed socket leaves the steering's map, and
the kernel places its connections). Every :data:`REDISCOVER_S` seconds it takes a cheap
fingerprint of the server's processes (:func:`fingerprint`: the threads of each worker
process and the children of their parents, a few ``/proc`` directory reads); when a worker
is gone, when the fingerprint changed, and every :data:`FULL_S` seconds in any case, it runs
group discovery again (:func:`tuner.group.discover`, tens of milliseconds on a host with
many workers):

- the same sockets, served by the same workers: nothing to do;
- the same sockets, other workers (an nginx reload: new workers inherit the sockets, the old
  ones drain and exit): the workers are replaced in place, target ``i`` still socket ``i``;
  the probes start observing the new processes;
- other sockets (a thread pool grew, a worker was respawned with a socket of its own): the
  steering is given the new set (sockets it held keep their target index);
- no map can be made (a reload half done: an old and a new worker both watch a socket; the
  server is gone): the agent leaves the kernel's placement in force, and tries again every
  window; after ``agent.lost_server_s`` seconds without a usable group it stops.

Every change is logged in the decision log (``changes``) and said on stderr; the tables start
afresh after it. The steering never sends to a socket that nobody serves: a table names only
the targets of the current map.
"""

from __future__ import annotations

import os
import sys
import time

from tuner.actuate.reuseport import ReuseportSteering
from tuner.agent.config import AgentConfig
from tuner.agent.loop import Agent
from tuner.agent.workers import WorkerMap
from tuner.errors import TunerError
from tuner.group import Group, discover
from tuner.probes.stream import FeatureStream

REDISCOVER_S = 2.0  # fingerprint the server's processes this often
FULL_S = 30.0  # and run the whole discovery at least this often
GONE_S = 0.5  # check that every task of the map still exists this often


def parents(pids: list[int]) -> list[int]:
    """The parent of each process of ``pids`` that still runs, once each.

    >>> import os
    >>> parents([os.getpid()]) == [os.getppid()]
    True
    """
    out = set()
    for pid in set(pids):
        try:
            with open(f"/proc/{pid}/stat") as f:
                out.add(int(f.read().rpartition(")")[2].split()[1]))
        except (OSError, ValueError, IndexError):
            continue
    return sorted(out - {0})


def fingerprint(pids: list[int], ppids: list[int]) -> tuple:
    """What changes when a server's workers change: the threads of each process of ``pids``,
    and the children of each of ``ppids`` (their parents: an nginx reload forks new
    workers; a thread pool grows by a thread). A worker that is gone changes it too.

    >>> import os
    >>> me = [os.getpid()]
    >>> fingerprint(me, parents(me)) == fingerprint(me, parents(me))
    True
    """
    out: list[tuple] = []
    for pid in sorted(set(pids)):
        try:
            out.append((pid, tuple(sorted(os.listdir(f"/proc/{pid}/task")))))
        except OSError:
            out.append((pid, None))
    for ppid in ppids:
        try:
            with open(f"/proc/{ppid}/task/{ppid}/children") as f:
                out.append((-ppid, f.read()))
        except OSError:
            out.append((-ppid, None))
    return tuple(out)


class WorkerWatch:
    """Follows the workers of ``group`` for ``agent`` (see the module text)."""

    def __init__(
        self,
        config: AgentConfig,
        agent: Agent,
        stream: FeatureStream,
        group: Group,
        netns: str | None,
        steering: ReuseportSteering,
    ) -> None:
        self.config = config
        self.agent = agent
        self.stream = stream
        self.group = group
        self.netns = netns
        self.steering = steering
        self.workers = agent.workers.workers
        self._next = time.monotonic() + REDISCOVER_S
        self._next_full = time.monotonic() + FULL_S
        self._parents = parents(self.workers.pids())
        self._print = self._seen = self._fingerprint()
        self._unsettled = False
        self._next_gone = 0.0
        self._lost_since: float | None = None

    def _fingerprint(self) -> tuple:
        return fingerprint(self.workers.pids(), self._parents)

    def _gone(self, now: float) -> bool:
        """Is a task of the map gone (checked every :data:`GONE_S` seconds)?"""
        if now < self._next_gone:
            return False
        self._next_gone = now + GONE_S
        for e in self.workers.entities:
            for pid, tid in e.members:
                path = f"/proc/{pid}" if tid is None else f"/proc/{pid}/task/{tid}"
                if not os.path.exists(path):
                    return True
        return False

    def check(self) -> None:
        """Called once a window, before the agent's step."""
        now = time.monotonic()
        if self._lost_since is None and not self._gone(now):
            if now < self._next:
                return
            self._next = now + REDISCOVER_S
            seen, self._seen = self._seen, self._fingerprint()
            if now < self._next_full and self._seen == self._print:
                return
            if self._seen != seen:  # still changing (a thread started, its socket not yet
                self._unsettled = True  # open): look again next time, whatever is found
        self._next = now + REDISCOVER_S
        self._next_full = now + FULL_S
        c = self.config
        try:
            found = discover(
                c.get("target.port"),
                c.get("target.protocol"),
                self.netns,
                c.get("target.address") or None,
            )
        except TunerError as e:
            self._uncertain(now, e.problem)
            return
        self._lost_since = None
        self.agent.hold("")
        found = found.in_order(self.group.inodes())
        if not _same(found, self.group):
            self._apply(found)
        if self._unsettled:
            self._unsettled = False
        else:
            self._parents = parents(self.workers.pids())
            self._print = self._seen = self._fingerprint()

    def _uncertain(self, now: float, why: str) -> None:
        if self._lost_since is None:
            self._lost_since = now
            say(f"worker map uncertain ({why}); the kernel places connections meanwhile")
        self.agent.hold(f"worker map uncertain: {why}")
        wait = self.config.get("agent.lost_server_s")
        if now - self._lost_since > wait:
            raise TunerError(
                f"no usable reuseport group on port {self.config.get('target.port')} for "
                f"{wait:g} s: {why}",
                "restart the agent when the server is back (agent.lost_server_s waits longer)",
            )

    def _apply(self, found: Group) -> None:
        old = self.group
        if found.inodes() != old.inodes():
            self.steering.retarget(found.handles())
        workers = WorkerMap.from_group(found)
        fresh = sorted(set(workers.pids()) - set(self.workers.pids()))
        if fresh:
            self.stream.watch_pids(fresh)
        why = _describe(old, found)
        self.agent.retarget(workers, why)
        self.group, self.workers = found, workers
        say(why)


def _same(a: Group, b: Group) -> bool:
    return a.inodes() == b.inodes() and [s.worker.key for s in a.sockets] == [
        s.worker.key for s in b.sockets
    ]


def _describe(old: Group, new: Group) -> str:
    """One line saying what changed.

    >>> from tuner.group.discover import GroupSocket, Worker
    >>> g = lambda *ws: Group(80, "tcp", "prefork", tuple(
    ...     GroupSocket(i, "", (), Worker(w, None, "nginx", ())) for i, w in enumerate(ws)))
    >>> _describe(g(10, 11), g(20, 21))
    'workers changed: 2 sockets; now served by 20, 21 (were 10, 11)'
    """
    keys = lambda g: ", ".join(s.worker.key for s in g.sockets)  # noqa: E731
    n_old, n_new = len(old.sockets), len(new.sockets)
    sockets = f"{n_new} sockets" if n_old == n_new else f"{n_old} -> {n_new} sockets"
    return f"workers changed: {sockets}; now served by {keys(new)} (were {keys(old)})"


def say(text: str) -> None:
    print(f"tuner run: {text}", file=sys.stderr, flush=True)
