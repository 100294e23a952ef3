"""Find a reuseport group's sockets and the worker that serves each, for any server shape.

A SO_REUSEPORT group is a set of listening (TCP) or bound (UDP) sockets on one address and
port. Steering picks a socket for each new connection; what it must know is which worker will
serve that socket. Three shapes of server are common, and discovery tells them apart from
``/proc`` alone (:mod:`tuner.group.procfs`):

1. ``process``: one process per socket, nothing inherited (the reference server).
2. ``prefork``: several processes hold every socket (inherited at fork), and each serves one:
   nginx with ``listen ... reuseport``. A socket's worker is the one process whose event loop
   (epoll interest list) watches it; a master that watches none is not a worker.
3. ``threads``: one process holds all the sockets and each of its threads serves one
   (thread-per-core servers, DNS servers with a UDP socket per thread). A thread's socket is
   the one it is blocked on: its ``epoll_wait``'s interest list, or the socket of its
   ``accept``/``recvfrom``. Threads busy at the moment are sampled again, a few times.

Where no one-socket-one-worker map can be made, :func:`discover` raises a one-line
:class:`~tuner.errors.TunerError` that says what it found.

Two processes, one socket each (shape 1), recorded:

>>> from tuner.group.procfs import RecordedProc
>>> row = "0: 010012C6:1F40 00000000:0000 0A 00000000:00000000 0 0 0 0 {} 1 0 0 10 0"
>>> tcp = "header\\n" + row.format(101) + "\\n" + row.format(102) + "\\n"
>>> files = {"1/net/tcp": tcp, "1/comm": "srv\\n", "2/comm": "srv\\n"}
>>> links = {"1/ns/net": "net:[1]", "2/ns/net": "net:[1]",
...          "1/fd/3": "socket:[101]", "2/fd/3": "socket:[102]"}
>>> g = discover(8000, netns="net:[1]", proc=RecordedProc(files, links))
>>> g.shape, [(s.inode, s.worker.pid) for s in g.sockets], g.sockets[0].address
('process', [(101, 1), (102, 2)], '198.18.0.1')
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from tuner import procnet
from tuner.errors import TunerError
from tuner.group.procfs import LiveProc, ProcView, blocked_on, cpu_list, watched

SAMPLES = 20  # looks at the threads' blocking calls, at most
SAMPLE_S = 0.025  # between looks
_SOCKET = re.compile(r"socket:\[(\d+)\]")


@dataclass(frozen=True)
class Worker:
    """Who serves a socket: a process (``tid`` None: all its threads) or one thread."""

    pid: int
    tid: int | None
    comm: str
    cpus: tuple[int, ...]  # the CPUs it may run on

    @property
    def key(self) -> str:
        """``pid`` or ``pid/tid``."""
        return str(self.pid) if self.tid is None else f"{self.pid}/{self.tid}"


@dataclass(frozen=True)
class GroupSocket:
    """One socket of the group: its inode, local address, who holds it and who serves it."""

    inode: int
    address: str
    holders: tuple[tuple[int, int], ...]  # (pid, fd) of every process that has it open
    worker: Worker


@dataclass(frozen=True)
class Group:
    """A reuseport group: target index ``i`` is ``sockets[i]``."""

    port: int
    protocol: str
    shape: str  # process | prefork | threads
    sockets: tuple[GroupSocket, ...]

    @property
    def workers(self) -> list[Worker]:
        return [s.worker for s in self.sockets]

    @classmethod
    def from_json(cls, data: dict) -> Group:
        """The group ``tuner group PORT --json`` printed (``dataclasses.asdict`` of one).

        >>> w = {"pid": 7, "tid": None, "comm": "nginx", "cpus": [0]}
        >>> s = {"inode": 9, "address": "0.0.0.0:80", "holders": [[7, 6]], "worker": w}
        >>> g = Group.from_json({"port": 80, "protocol": "tcp", "shape": "process", "sockets": [s]})
        >>> g.workers[0].key, g.handles()
        ('7', [(7, 6)])
        """
        sockets = tuple(
            GroupSocket(
                s["inode"],
                s["address"],
                tuple((pid, fd) for pid, fd in s["holders"]),
                Worker(**{**s["worker"], "cpus": tuple(s["worker"]["cpus"])}),
            )
            for s in data["sockets"]
        )
        return cls(data["port"], data["protocol"], data["shape"], sockets)

    @property
    def pids(self) -> list[int]:
        """Every process that serves a socket, in target order, once each."""
        return list(dict.fromkeys(w.pid for w in self.workers))

    def inodes(self) -> list[int]:
        return [s.inode for s in self.sockets]

    def handles(self) -> list[tuple[int, int]]:
        """For each socket in target order, a ``(pid, fd)`` to take it from: its worker's
        own, when the worker holds it."""
        return [
            next((h for h in s.holders if h[0] == s.worker.pid), s.holders[0]) for s in self.sockets
        ]

    def in_order(self, inodes: list[int]) -> Group:
        """The same group with the sockets of ``inodes`` first, in that order (sockets a
        steering already holds keep their target index), the others after them.

        >>> w = Worker(1, None, "x", ())
        >>> g = Group(80, "tcp", "process", tuple(GroupSocket(i, "", (), w) for i in (5, 6, 7)))
        >>> g.in_order([7, 9, 5]).inodes()
        [7, 5, 6]
        """
        rank = {inode: i for i, inode in enumerate(inodes)}
        order = sorted(self.sockets, key=lambda s: (rank.get(s.inode, len(rank)), s.inode))
        return Group(self.port, self.protocol, self.shape, tuple(order))

    def explain(self) -> str:
        """The map as a table: target, socket, worker, command, CPUs."""
        n = len(self.sockets)
        head = (
            f"reuseport group {self.sockets[0].address}:{self.port}/{self.protocol}: "
            f"{n} socket{'s' if n > 1 else ''}, shape {self.shape}"
            + ("; one socket is nothing to steer between (SO_REUSEPORT, one per worker)"
               if n == 1 else "")
        )  # fmt: skip
        rows = [head, f"{'target':>6}  {'socket':>10}  {'worker':<14} {'command':<16} cpus"]
        for i, s in enumerate(self.sockets):
            w = s.worker
            cpus = _ranges(w.cpus)
            rows.append(f"{i:>6}  {s.inode:>10}  {w.key:<14} {w.comm:<16} {cpus}")
        return "\n".join(rows)


def _ranges(cpus: tuple[int, ...]) -> str:
    """``(0, 1, 2, 5)`` as ``0-2,5``.

    >>> _ranges((0, 1, 2, 5)), _ranges(())
    ('0-2,5', '-')
    """
    out, start = [], None
    for i, c in enumerate(cpus):
        if start is None:
            start = c
        if i + 1 == len(cpus) or cpus[i + 1] != c + 1:
            out.append(str(start) if start == c else f"{start}-{c}")
            start = None
    return ",".join(out) or "-"


class _Scan:
    """One look at the processes of a network namespace."""

    def __init__(self, proc: ProcView, netns: str | None) -> None:
        self.proc = proc
        self.netns = netns or proc.readlink("self/ns/net")
        self.pids = [
            int(p)
            for p in proc.listdir("")
            if p.isdigit() and proc.readlink(f"{p}/ns/net") == self.netns
        ]

    def sockets(self, port: int, protocol: str) -> list[procnet.BoundSocket]:
        for pid in self.pids:
            found = self.proc.listeners(pid, protocol, port)
            if found is not None:
                return found
        return []

    def fds(self, pid: int) -> dict[int, str]:
        out = {}
        for fd in self.proc.listdir(f"{pid}/fd"):
            target = self.proc.readlink(f"{pid}/fd/{fd}")
            if target is not None and fd.isdigit():
                out[int(fd)] = target
        return out

    def epoll_watch(self, pid: int, epfd: int) -> set[int]:
        return set(watched(self.proc.read(f"{pid}/fdinfo/{epfd}") or ""))

    def worker(self, pid: int, tid: int | None) -> Worker:
        base = f"{pid}" if tid is None else f"{pid}/task/{tid}"
        comm = (self.proc.read(f"{base}/comm") or "?").strip()
        cpus: tuple[int, ...] = ()
        for line in (self.proc.read(f"{base}/status") or "").splitlines():
            if line.startswith("Cpus_allowed_list:"):
                cpus = cpu_list(line.split(":", 1)[1])
        return Worker(pid, tid, comm, cpus)


def discover(
    port: int,
    protocol: str = "tcp",
    netns: str | None = None,
    address: str | None = None,
    proc: ProcView | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Group:
    """The reuseport group on ``port`` in network namespace ``netns`` (its ``net:[inode]``
    link text; None: this process's) and the worker of each socket. ``address`` picks one
    group when sockets on the port are bound to several addresses."""
    scan, holders, fds = _scan_group(port, protocol, netns, address, proc)
    return _assign(scan, port, protocol, holders, fds, sleep)


def holder_pids(
    port: int,
    protocol: str = "tcp",
    netns: str | None = None,
    address: str | None = None,
    proc: ProcView | None = None,
) -> list[int]:
    """The processes that hold a socket of the group on ``port``, whether or not a map of
    workers can be made (what ``tuner group --record`` records for a bug report)."""
    _, holders, _ = _scan_group(port, protocol, netns, address, proc)
    return sorted({pid for hs in holders.values() for pid, _ in hs})


def _scan_group(
    port: int, protocol: str, netns: str | None, address: str | None, proc: ProcView | None
) -> tuple[_Scan, dict[int, list[tuple[int, int]]], dict[int, dict[int, str]]]:
    """The group's sockets on ``port``: who holds each (pid, fd), and each holder's fds."""
    if protocol not in procnet.STATES:
        raise TunerError(f"protocol must be tcp or udp; got {protocol!r}")
    scan = _Scan(proc or LiveProc(), netns)
    found = scan.sockets(port, protocol)
    if address is not None:
        found = [s for s in found if s.address == address]
    where = f"port {port}/{protocol}" + (f" on {address}" if address else "")
    if not found:
        raise TunerError(
            f"no process listens on {where}",
            "start the server first, or fix target.port (and target.netns)",
        )
    addresses = sorted({s.address for s in found})
    if len(addresses) > 1:
        raise TunerError(
            f"{where} has sockets on {len(addresses)} addresses ({', '.join(addresses)}), "
            "one reuseport group each",
            "set target.address to the one to steer",
        )
    inodes = {int(s.inode) for s in found}
    holders: dict[int, list[tuple[int, int]]] = {i: [] for i in inodes}
    fds: dict[int, dict[int, str]] = {}
    for pid in scan.pids:
        fds[pid] = scan.fds(pid)
        for fd, target in fds[pid].items():
            m = _SOCKET.fullmatch(target)
            if m and int(m.group(1)) in inodes:
                holders[int(m.group(1))].append((pid, fd))
    return scan, holders, fds


def _assign(scan, port, protocol, holders, fds, sleep) -> Group:
    """Give each socket its worker (see the module text), or raise saying what was seen."""
    inodes = set(holders)
    held_by: dict[int, set[int]] = {}
    for inode, hs in holders.items():
        for pid, _ in hs:
            held_by.setdefault(pid, set()).add(inode)
    # event loops per process: which group sockets its epoll instances watch
    proc_watch = {
        pid: set().union(
            *(scan.epoll_watch(pid, fd) for fd, t in fds[pid].items() if t.endswith("[eventpoll]"))
        )
        & inodes
        for pid in held_by
    }
    worker: dict[int, tuple[int, int | None]] = {}
    for inode in inodes:
        pids = {pid for pid, _ in holders[inode]}
        watchers = [p for p in pids if inode in proc_watch[p]]
        if len(pids) == 1 and len(held_by[next(iter(pids))]) == 1:
            worker[inode] = (next(iter(pids)), None)
        elif len(watchers) == 1 and proc_watch[watchers[0]] == {inode}:
            worker[inode] = (watchers[0], None)
    left = inodes - set(worker)
    if left:
        worker.update(_by_thread(scan, left, holders, fds, sleep))
    unmapped = sorted(inodes - set(worker))
    if len(inodes) == 1 and unmapped and len(holders[unmapped[0]]) > 1:
        raise TunerError(
            f"port {port}/{protocol} has one socket ({unmapped[0]}), shared by "
            f"{_who(scan, holders[unmapped[0]])}: no SO_REUSEPORT group, so nothing to "
            "steer between",
            "give each worker a socket of its own (nginx: `listen ... reuseport;`); see "
            "docs/real-servers.md",
        )
    if unmapped:
        raise TunerError(
            f"cannot tell which worker serves {len(unmapped)} of the {len(inodes)} sockets on "
            f"port {port}/{protocol}: {_seen(scan, unmapped, holders)}",
            "each socket needs one process or thread whose event loop watches it alone; "
            "see docs/real-servers.md",
        )
    serves: dict[tuple[int, int | None], list[int]] = {}
    for inode, w in worker.items():
        serves.setdefault(w, []).append(inode)
    shared = {w: s for w, s in serves.items() if len(s) > 1}
    if shared:
        (pid, tid), socks = next(iter(shared.items()))
        raise TunerError(
            f"worker {pid if tid is None else f'{pid}/{tid}'} serves {len(socks)} sockets of "
            f"port {port}/{protocol} ({', '.join(map(str, sorted(socks)))})",
            "steering needs one socket per worker: give each worker its own socket",
        )
    threads = any(tid is not None for tid in (w[1] for w in worker.values()))
    prefork = any(len(hs) > 1 for hs in holders.values())
    shape = "threads" if threads else "prefork" if prefork else "process"
    sockets = sorted(
        (
            GroupSocket(inode, "", tuple(sorted(holders[inode])), scan.worker(*worker[inode]))
            for inode in inodes
        ),
        key=lambda s: (s.worker.pid, s.worker.tid or 0, s.inode),
    )
    address = scan.sockets(port, protocol)[0].address
    sockets = [GroupSocket(s.inode, address, s.holders, s.worker) for s in sockets]
    return Group(port, protocol, shape, tuple(sockets))


def _by_thread(scan, left, holders, fds, sleep) -> dict[int, tuple[int, int | None]]:
    """Sockets of ``left`` served by one thread: the thread seen blocked on it (alone)."""
    pids = sorted({pid for inode in left for pid, _ in holders[inode]})
    seen: dict[tuple[int, int], set[int]] = {}  # thread -> group sockets it waited on
    for look in range(SAMPLES):
        for pid in pids:
            for t in scan.proc.listdir(f"{pid}/task"):
                b = blocked_on(scan.proc.read(f"{pid}/task/{t}/syscall") or "", scan.proc.machine)
                if b is None:
                    continue
                kind, fd = b
                m = _SOCKET.fullmatch(fds[pid].get(fd, ""))
                on = (
                    scan.epoll_watch(pid, fd)
                    if kind == "epoll"
                    else ({int(m.group(1))} if m else set())
                )
                on &= set(holders)
                if on:
                    seen.setdefault((pid, int(t)), set()).update(on)
        by_socket: dict[int, list[tuple[int, int]]] = {}
        for th, socks in seen.items():
            if len(socks) == 1:
                by_socket.setdefault(next(iter(socks)), []).append(th)
        done = all(len(by_socket.get(i, [])) >= 1 for i in left)
        if done or look == SAMPLES - 1:
            break
        sleep(SAMPLE_S)
    out: dict[int, tuple[int, int | None]] = {}
    for inode in left:
        ths = by_socket.get(inode, [])
        if len(ths) != 1:
            continue
        pid, tid = ths[0]
        single = len(scan.proc.listdir(f"{pid}/task")) == 1
        out[inode] = (pid, None if single else tid)
    return out


def _who(scan, hs: list[tuple[int, int]]) -> str:
    """The first few processes of (pid, fd) holders, with their command names."""
    pids = sorted({p for p, _ in hs})
    more = f" and {len(pids) - 4} more" if len(pids) > 4 else ""
    return ", ".join(f"{pid} ({scan.worker(pid, None).comm})" for pid in pids[:4]) + more


def _seen(scan, unmapped: list[int], holders) -> str:
    """What discovery found of the sockets it could not map, in a few words."""
    parts = []
    for inode in unmapped[:3]:
        parts.append(f"socket {inode} held by {_who(scan, holders[inode]) or 'no process'}")
    more = f" and {len(unmapped) - 3} more" if len(unmapped) > 3 else ""
    return "; ".join(parts) + more + "; none watched by one worker alone"
