"""What group discovery reads from ``/proc``, behind one small interface, so that the mapping
logic runs the same on the live system and on recorded fixtures of real servers.

:class:`LiveProc` reads the running system; :class:`RecordedProc` answers from a dict of
paths (``tests/fixtures/proc/*.json``), and :func:`record` makes such a dict from the live
system for the processes of a group.

The facts and their sources:

- sockets on a port: sock_diag in the pid's network namespace (:mod:`tuner.sockdiag`) on the
  live system, ``/proc/<pid>/net/{tcp,tcp6,udp,udp6}`` as recorded;
- who holds a socket: ``/proc/<pid>/fd/*`` links ``socket:[<inode>]``;
- which sockets an event loop watches: ``/proc/<pid>/fdinfo/<epoll fd>``, one
  ``tfd: ... ino:<hex inode>`` line per watched file (fs/eventpoll.c, ``ep_show_fdinfo``);
- what a thread is blocked on: ``/proc/<pid>/task/<tid>/syscall``, the system call number and
  its arguments (``epoll_wait(epfd, ...)``, ``accept4(fd, ...)``, ``recvfrom(fd, ...)``).

>>> watched("pos:\\t0\\nflags:\\t02\\nmnt_id:\\t15\\ntfd:        5 events:       19 data: "
...         "5  pos:0 ino:3e8 sdev:8\\n")
[1000]
>>> blocked_on("232 0x7 0x7ffd 0x200 0xffffffff 0x0 0x0 0x7ffd 0x7f00", "x86_64")
('epoll', 7)
>>> blocked_on("running", "x86_64") is None
True
>>> cpu_list("0-2,5")
(0, 1, 2, 5)
"""

from __future__ import annotations

import json
import os
import platform
import re
from collections.abc import Iterable
from typing import Protocol

from tuner import sockdiag
from tuner.errors import TunerError
from tuner.procnet import BoundSocket, parse_sockets

# system calls that wait on one fd given as their first argument, by machine
EPOLL_CALLS = {"x86_64": {232, 281, 441}, "aarch64": {22, 441}}
FD_CALLS = {  # accept, accept4, recvfrom, recvmsg, recvmmsg, read
    "x86_64": {43, 288, 45, 47, 299, 0},
    "aarch64": {202, 242, 207, 212, 243, 63},
}
_TFD = re.compile(r"^tfd:\s*(\d+)\s.*\bino:([0-9a-fA-F]+)", re.M)


def watched(fdinfo: str) -> list[int]:
    """Inodes of the files an epoll instance watches, from its fdinfo text."""
    return [int(m.group(2), 16) for m in _TFD.finditer(fdinfo)]


def blocked_on(syscall: str, machine: str | None = None) -> tuple[str, int] | None:
    """``("epoll", epfd)`` or ``("fd", fd)`` when a thread's ``syscall`` file shows it blocked
    in an event-loop wait or on one socket; None when it runs or waits on something else."""
    parts = syscall.split()
    if len(parts) < 2 or not parts[0].lstrip("-").isdigit():
        return None
    nr, arg = int(parts[0]), int(parts[1], 16)
    arch = machine or platform.machine()
    if nr in EPOLL_CALLS.get(arch, ()):
        return ("epoll", arg)
    if nr in FD_CALLS.get(arch, ()):
        return ("fd", arg)
    return None


def cpu_list(text: str) -> tuple[int, ...]:
    """``Cpus_allowed_list`` text (``0-2,5``) as a tuple of CPU numbers."""
    out: list[int] = []
    for part in text.strip().split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out += range(int(lo), int(hi) + 1)
        elif part:
            out.append(int(part))
    return tuple(out)


class ProcView(Protocol):
    """The reads group discovery makes; paths are relative to ``/proc``."""

    machine: str

    def read(self, path: str) -> str | None: ...

    def readlink(self, path: str) -> str | None: ...

    def listdir(self, path: str) -> list[str]: ...

    def listeners(self, pid: int, protocol: str, port: int) -> list[BoundSocket] | None:
        """Listening sockets on ``port`` in the network namespace of ``pid`` (None: the
        process is gone)."""
        ...


class LiveProc:
    """The running system's ``/proc`` (or another root)."""

    def __init__(self, root: str = "/proc") -> None:
        self.root = root
        self.machine = platform.machine()

    def read(self, path: str) -> str | None:
        try:
            with open(os.path.join(self.root, path), errors="replace") as f:
                return f.read()
        except OSError:
            return None

    def readlink(self, path: str) -> str | None:
        try:
            return os.readlink(os.path.join(self.root, path))
        except OSError:
            return None

    def listdir(self, path: str) -> list[str]:
        try:
            return os.listdir(os.path.join(self.root, path))
        except OSError:
            return []

    def listeners(self, pid: int, protocol: str, port: int) -> list[BoundSocket] | None:
        try:
            return sockdiag.listeners(protocol, port, pid)
        except TunerError:
            return None  # gone


class RecordedProc:
    """``/proc`` as recorded: ``files`` maps a path to its text, ``links`` to a link target.

    >>> p = RecordedProc({"7/comm": "nginx\\n"}, {"7/fd/3": "socket:[99]"})
    >>> p.read("7/comm"), p.readlink("7/fd/3"), p.listdir("7/fd"), p.listdir("")
    ('nginx\\n', 'socket:[99]', ['3'], ['7'])
    """

    def __init__(
        self, files: dict[str, str], links: dict[str, str], machine: str = "x86_64"
    ) -> None:
        self.files, self.links, self.machine = files, links, machine

    @classmethod
    def load(cls, path: str) -> RecordedProc:
        with open(path) as f:
            data = json.load(f)
        return cls(data["files"], data["links"], data.get("machine", "x86_64"))

    def read(self, path: str) -> str | None:
        return self.files.get(path)

    def readlink(self, path: str) -> str | None:
        return self.links.get(path)

    def listeners(self, pid: int, protocol: str, port: int) -> list[BoundSocket] | None:
        texts = [self.read(f"{pid}/net/{protocol}{v}") for v in ("", "6")]
        if all(t is None for t in texts):
            return None
        return [s for t in texts if t for s in parse_sockets(t, protocol, port)]

    def listdir(self, path: str) -> list[str]:
        prefix = f"{path}/" if path else ""
        paths = (*self.files, *self.links)
        return sorted({p[len(prefix) :].split("/")[0] for p in paths if p.startswith(prefix)})


def record(proc: ProcView, pids: Iterable[int]) -> dict:
    """What discovery reads of ``pids``, as a dict :meth:`RecordedProc.load` takes back (the
    way the fixtures of real servers under ``tests/fixtures/proc`` were made)."""
    files: dict[str, str] = {}
    links: dict[str, str] = {}

    def keep(path: str) -> None:
        text = proc.read(path)
        if text is not None:
            files[path] = text

    for pid in pids:
        links[f"{pid}/ns/net"] = proc.readlink(f"{pid}/ns/net") or ""
        for name in ("comm", "status", "net/tcp", "net/tcp6", "net/udp", "net/udp6"):
            keep(f"{pid}/{name}")
        for fd in proc.listdir(f"{pid}/fd"):
            target = proc.readlink(f"{pid}/fd/{fd}")
            if target is None:
                continue
            links[f"{pid}/fd/{fd}"] = target
            if target == "anon_inode:[eventpoll]":
                keep(f"{pid}/fdinfo/{fd}")
        for tid in proc.listdir(f"{pid}/task"):
            for name in ("comm", "status", "syscall"):
                keep(f"{pid}/task/{tid}/{name}")
    return {"machine": proc.machine, "files": files, "links": links}
