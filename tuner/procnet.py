"""Read sockets from ``/proc``: listening sockets on a port, and which fds of a process they are.

``/proc/<pid>/net/{tcp,tcp6,udp,udp6}`` show the sockets of that process's network namespace.
A TCP row in state LISTEN (``0A``) has its accept-queue length in ``rx_queue``; a bound UDP
socket is in state ``07``.

>>> list(listening("/nonexistent", "tcp", 80))
[]
"""

from __future__ import annotations

import os
from collections.abc import Iterator

STATES = {"tcp": "0A", "udp": "07"}  # TCP_LISTEN; TCP_CLOSE, as /proc shows bound UDP sockets


def listening(net_dir: str, protocol: str, port: int) -> Iterator[tuple[str, int]]:
    """Yield ``(inode, rx_queue)`` of listening (TCP) or bound (UDP) sockets on ``port``, IPv4
    and IPv6, from ``net_dir`` (``/proc/net`` or ``/proc/<pid>/net``)."""
    for name in (protocol, protocol + "6"):
        try:
            with open(f"{net_dir}/{name}") as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if (
                        len(cols) > 9
                        and cols[3] == STATES[protocol]
                        and int(cols[1].rsplit(":", 1)[1], 16) == port
                    ):
                        yield cols[9], int(cols[4].split(":")[1], 16)
        except OSError:
            continue


def fds_of(pid: int, inodes: set[str], proc: str = "/proc") -> list[int]:
    """The fd numbers of process ``pid`` that refer to the socket inodes given, in fd order."""
    links = {f"socket:[{i}]" for i in inodes}
    fds = []
    try:
        names = sorted(os.listdir(f"{proc}/{pid}/fd"), key=int)
    except OSError:
        return fds
    for fd in names:
        try:
            if os.readlink(f"{proc}/{pid}/fd/{fd}") in links:
                fds.append(int(fd))
        except OSError:
            continue
    return fds
