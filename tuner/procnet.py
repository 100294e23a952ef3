"""Read sockets from ``/proc``: listening sockets on a port in a recorded ``/proc/net`` file
(the live system asks :mod:`tuner.sockdiag`), and which fds of a process they are.

``/proc/<pid>/net/{tcp,tcp6,udp,udp6}`` show the sockets of that process's network namespace.
A TCP row in state LISTEN (``0A``) has its accept-queue length in ``rx_queue``; a bound UDP
socket is in state ``07``.

>>> row = "0: 014D13C6:1F90 00000000:0000 0A 00000000:00000003 00:0 0 0 0 1234 1 0 0 10 0"
>>> [(s.inode, s.address, s.backlog) for s in parse_sockets("hdr\\n" + row, "tcp", 8080)]
[('1234', '198.19.77.1', 3)]
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass

STATES = {"tcp": "0A", "udp": "07"}  # TCP_LISTEN; TCP_CLOSE, as /proc shows bound UDP sockets


@dataclass(frozen=True)
class BoundSocket:
    """A listening (TCP) or bound (UDP) socket as ``/proc/net`` shows it."""

    inode: str
    address: str  # local address, e.g. 198.18.0.1 or ::
    backlog: int  # rx_queue: the accept queue of a listening TCP socket


def _address(hex_addr: str) -> str:
    """A ``/proc/net`` local address (host byte order per 32-bit word) as text.

    >>> _address("0100007F"), _address("00000000000000000000000001000000")
    ('127.0.0.1', '::1')
    """
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def parse_sockets(text: str, protocol: str, port: int) -> Iterator[BoundSocket]:
    """The listening (TCP) or bound (UDP) sockets on ``port`` in one ``/proc/net`` file."""
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) > 9 and cols[3] == STATES[protocol]:
            addr, _, hex_port = cols[1].rpartition(":")
            if int(hex_port, 16) == port:
                yield BoundSocket(cols[9], _address(addr), int(cols[4].split(":")[1], 16))


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
