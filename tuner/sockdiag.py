"""Listening sockets on a port, from the kernel's sock_diag netlink interface (what ``ss -l``
reads), through pyroute2's :class:`~pyroute2.DiagSocket`.

``/proc/net/tcp`` walks every bucket of the host's connection table to print its rows: about
4 ms on the test machine with a few hundred connections, paid on every read. A sock_diag
dump of listening sockets (state LISTEN for TCP, CLOSE for a bound UDP socket) is filtered in
the kernel and walks only the listening table: about 1 ms, most of it pyroute2 parsing.

A :class:`Listeners` is opened in the network namespace of a process (a netlink socket
belongs to the namespace it was created in) and queried as often as needed.

>>> import os, socket as s
>>> srv = s.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
>>> port = srv.getsockname()[1]
>>> with Listeners() as diag:
...     found = diag.query("tcp", port)
>>> [(b.address, int(b.inode) == os.fstat(srv.fileno()).st_ino) for b in found]
[('127.0.0.1', True)]
>>> srv.close()
"""

from __future__ import annotations

import socket

from tuner.errors import TunerError
from tuner.netns import inside_pid
from tuner.procnet import STATES, BoundSocket


class Listeners:
    """A sock_diag socket in the network namespace of ``pid`` (None: this thread's)."""

    def __init__(self, pid: int | None = None) -> None:
        from pyroute2 import DiagSocket  # 0.2 s to import: only for those who use it

        with inside_pid(pid):
            self._diag = DiagSocket()
        self._diag.bind()

    def query(self, protocol: str, port: int) -> list[BoundSocket]:
        """The listening (TCP) or bound, unconnected (UDP) sockets on ``port``, IPv4 and
        IPv6; ``backlog`` is the receive queue (a TCP listener's: connections waiting to be
        accepted)."""
        if protocol not in STATES:
            raise TunerError(f"protocol must be tcp or udp; got {protocol!r}")
        from pyroute2.netlink.diag import SS_CLOSE, SS_LISTEN

        number, state = {"tcp": (socket.IPPROTO_TCP, SS_LISTEN),
                         "udp": (socket.IPPROTO_UDP, SS_CLOSE)}[protocol]  # fmt: skip
        out = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for m in self._diag.get_sock_stats(family=family, states=1 << state, protocol=number):
                if m["idiag_sport"] == port:
                    out.append(BoundSocket(str(m["idiag_inode"]), m["idiag_src"],
                                           int(m["idiag_rqueue"])))  # fmt: skip
        return out

    def close(self) -> None:
        self._diag.close()

    def __enter__(self) -> Listeners:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def listeners(protocol: str, port: int, pid: int | None = None) -> list[BoundSocket]:
    """One :meth:`Listeners.query` in the namespace of ``pid``.

    >>> listeners("tcp", 1)
    []
    """
    with Listeners(pid) as diag:
        return diag.query(protocol, port)
