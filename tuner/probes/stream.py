"""Run several probes together and yield their frames window by window.

:class:`FeatureStream` is what the learner consumes: each item is one closed window with the
frames of every probe for it. Processes to observe can be named by listening port as well,
through :func:`pids_listening_on`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

from tuner import procnet, sockdiag
from tuner.errors import TunerError
from tuner.probes.base import Frame, Probe, ProbeStats, wait_for_window
from tuner.probes.config import ProbeConfig
from tuner.probes.net import NetProbe
from tuner.probes.sched import SchedProbe
from tuner.probes.syscalls import SyscallProbe

PROBES: dict[str, type[Probe]] = {"sched": SchedProbe, "syscalls": SyscallProbe, "net": NetProbe}


@dataclass(frozen=True)
class Window:
    """Frames of all probes for the windows closed since the previous item."""

    end: int  # ns, CLOCK_MONOTONIC: the latest window end among the frames
    frames: list[Frame]
    closed: int = 0  # ns, CLOCK_MONOTONIC: when the window was closed and read


class FeatureStream:
    """Open the named probes with one config; iterate to get :class:`Window` items.

    Use as a context manager: leaving it detaches every probe, also on Ctrl-C.
    """

    def __init__(self, config: ProbeConfig, probes: Sequence[str] = tuple(PROBES)) -> None:
        self.config = config
        self.probes = probes
        self._stack: ExitStack | None = None
        self._open: list[Probe] = []

    def __enter__(self) -> FeatureStream:
        unknown = [p for p in self.probes if p not in PROBES]
        if unknown:
            raise TunerError(f"unknown probe {unknown[0]!r}", f"choose from {', '.join(PROBES)}")
        self.config.validate()
        self._stack = ExitStack()
        try:
            for name in self.probes:
                self._open.append(self._stack.enter_context(PROBES[name](self.config)))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack, self._open = None, []

    def windows(self, seconds: float | None = None) -> Iterator[Window]:
        """Yield one item per window boundary, for ``seconds`` (forever when None)."""
        stop = None if seconds is None else time.monotonic() + seconds
        while stop is None or time.monotonic() < stop:
            wait_for_window(self.config.window_ms)
            closed = time.monotonic_ns()
            frames = [f for p in self._open for f in p.poll()]
            end = max((f.window_end for f in frames), default=closed)
            yield Window(end, frames, closed)

    def watch_pids(self, pids: Sequence[int]) -> None:
        """Observe these processes too, from now on, in every open probe."""
        for p in self._open:
            p.watch_pids(pids)

    def programs(self) -> dict[str, int]:
        """The attached programs of every open probe by attach point, and their fds."""
        return {k: fd for p in self._open for k, fd in p.programs().items()}

    def stats(self) -> dict[str, ProbeStats]:
        """Kernel-side counters of each open probe."""
        return {p.name: p.stats() for p in self._open}


def pids_listening_on(port: int, proc: str = "/proc") -> list[int]:
    """Processes of this network namespace that own a listening TCP socket (or a bound UDP
    socket) on ``port``.

    >>> pids_listening_on(1)
    []
    """
    inodes = {s.inode for protocol in procnet.STATES for s in sockdiag.listeners(protocol, port)}
    if not inodes:
        return []
    pids = [
        int(p) for p in os.listdir(proc) if p.isdigit() and procnet.fds_of(int(p), inodes, proc)
    ]
    return sorted(pids)
