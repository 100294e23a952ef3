"""Run a block of code inside a named network namespace (``ip netns`` names).

>>> with inside(None):   # None: stay where we are
...     pass
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

from tuner.errors import TunerError

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def inside(name: str | None) -> Iterator[None]:
    """Switch this thread into network namespace ``name`` for the block, then back."""
    if name is None:
        yield
        return
    try:
        target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    except OSError:
        raise TunerError(
            f"network namespace {name!r} does not exist", "list them with `ip netns list`"
        ) from None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


@contextmanager
def inside_pid(pid: int | None) -> Iterator[None]:
    """Switch this thread into the network namespace of process ``pid`` for the block, then
    back (None, or a process in this thread's namespace: stay).

    >>> with inside_pid(os.getpid()):
    ...     pass
    """
    if pid is None:
        yield
        return
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    except OSError:
        raise TunerError(f"process {pid} is gone", "check that the server still runs") from None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if os.fstat(target).st_ino == os.fstat(home).st_ino:
            yield
            return
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def netns_link(name: str) -> str:
    """The ``net:[inode]`` text that ``/proc/<pid>/ns/net`` of a process in the network
    namespace ``name`` (an ``ip netns`` name) links to.

    >>> netns_link("no-such-netns")
    Traceback (most recent call last):
    ...
    tuner.errors.TunerError: network namespace 'no-such-netns' does not exist; fix: list them \
with `ip netns list`
    """
    try:
        return f"net:[{os.stat(f'/var/run/netns/{name}').st_ino}]"
    except OSError:
        raise TunerError(
            f"network namespace {name!r} does not exist", "list them with `ip netns list`"
        ) from None
