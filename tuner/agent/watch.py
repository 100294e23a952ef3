"""Workers that change: an nginx reload, a crashed worker respawned, a thread pool that grows.

Each window the agent checks that every task it steers to still exists (one ``stat`` per
worker). Every :data:`REDISCOVER_S` seconds, and at once when a worker is gone, it runs group
discovery again (:func:`tuner.group.discover`):

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

REDISCOVER_S = 2.0


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
        self._lost_since: float | None = None

    def _gone(self) -> bool:
        for e in self.workers.entities:
            for pid, tid in e.members:
                path = f"/proc/{pid}" if tid is None else f"/proc/{pid}/task/{tid}"
                if not os.path.exists(path):
                    return True
        return False

    def check(self) -> None:
        """Called once a window, before the agent's step."""
        now = time.monotonic()
        if now < self._next and not self._gone() and self._lost_since is None:
            return
        self._next = now + REDISCOVER_S
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
        if _same(found, self.group):
            return
        self._apply(found)

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
