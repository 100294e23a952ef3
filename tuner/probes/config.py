"""Which processes the probes observe, and how they aggregate: :class:`ProbeConfig`.

>>> cfg = ProbeConfig(window_ms=50, pids=(1,))
>>> cfg.validate().cflags()[:2]
['-DWINDOW_NS=50000000ULL', '-DMAX_ENTITIES=256']
>>> ProbeConfig(window_ms=0).validate()
Traceback (most recent call last):
...
tuner.errors.TunerError: The 'window_ms' parameter of ProbeConfig must be an int in the range [10, 10000]. Got 0 instead.
"""  # noqa: E501

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tuner.errors import TunerError

CGROUP2_ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
#: The most entity slots a probe can have: each window's flush walks every slot and frees up
#: to FREE_PER_FLUSH (bpf/probe_common.c) ended ones in bounded loops, and the verifier
#: (6.18) refuses the network probe's beyond this ("the sequence of 8193 jumps is too
#: complex"). tests/test_probes.py loads every probe with it.
MAX_SLOTS = 384
SYSCALL_CLASSES = ("other", "net", "file", "poll", "mem")  # bpf/syscalls.h, in its order


def _range_error(name: str, lo: int, hi: int, got: object) -> TunerError:
    return TunerError(
        f"The '{name}' parameter of ProbeConfig must be an int in the range "
        f"[{lo}, {hi}]. Got {got!r} instead."
    )


@dataclass(frozen=True)
class ProbeConfig:
    """Options shared by all probes. Selectors combine with OR; none means every process.

    Parameters
    ----------
    window_ms : int
        Aggregation window in milliseconds; each probe emits one record per active entity per
        window.
    pids : tuple of int
        Observe these processes (tgids) and their threads.
    comm : str or None
        Observe tasks with this command name (as in ``/proc/PID/comm``, at most 15 bytes).
    cgroup : str or None
        Observe tasks in this cgroup v2 directory (not its descendants).
    max_entities : int
        Entity slots per probe (at most :data:`MAX_SLOTS`); entities beyond it are counted as
        overflow and not observed.
    ringbuf_pages : int
        Ring buffer size in pages (a power of two).
    latency_sample : int
        The syscall probe times one in this many calls, chosen at random, and counts each
        timed call this many times in ``time_ns_*`` and the histogram (a power of two; 1, the
        default, times every call). Calls and errors are always counted exactly. Timing is
        the dearest part of the probe's work, so a larger value costs a busy process less.
    syscall_classes : tuple of str
        The syscall classes the syscall probe counts (of ``other``, ``net``, ``file``,
        ``poll``, ``mem``; empty: all). Any other syscall is dropped by the probe's first
        instructions, before it looks at the task.
    syscall_duty : float
        Fraction of each ``syscall_period_ms`` the syscall probe is attached (1: always).
        Detached, no syscall of any process goes through the tracing slow path; attached, it
        counts as usual, and its figures are scaled by 1 / duty (an estimate of the period's).
    syscall_period_ms : int
        The duty cycle's period, a whole number of windows.
    """

    window_ms: int = 100
    pids: tuple[int, ...] = ()
    comm: str | None = None
    cgroup: str | None = None
    max_entities: int = 256
    ringbuf_pages: int = 64
    latency_sample: int = 1
    syscall_classes: tuple[str, ...] = ()
    syscall_duty: float = 1.0
    syscall_period_ms: int = 1000
    max_cpus: int = field(default_factory=lambda: os.cpu_count() or 1)

    def validate(self) -> ProbeConfig:
        """Check every option before anything is loaded; return self."""
        if not isinstance(self.window_ms, int) or not 10 <= self.window_ms <= 10000:
            raise _range_error("window_ms", 10, 10000, self.window_ms)
        if not isinstance(self.max_entities, int) or not 1 <= self.max_entities <= MAX_SLOTS:
            raise _range_error("max_entities", 1, MAX_SLOTS, self.max_entities)
        for name, hi in (("ringbuf_pages", 65536), ("latency_sample", 1024)):
            p = getattr(self, name)
            if not isinstance(p, int) or p < 1 or p & (p - 1) or p > hi:
                raise TunerError(
                    f"The '{name}' parameter of ProbeConfig must be a power of "
                    f"two in [1, {hi}]. Got {p!r} instead."
                )
        for pid in self.pids:
            if not os.path.exists(f"/proc/{pid}"):
                raise TunerError(f"process {pid} does not exist", "check the --pid value")
        if self.comm is not None and (
            not 0 < len(self.comm.encode()) <= 15
            or not self.comm.isprintable()
            or set('"\\') & set(self.comm)
        ):
            raise TunerError(
                f"command name {self.comm!r} must be 1 to 15 bytes",
                "use the name shown in /proc/PID/comm",
            )
        if self.cgroup is not None:
            self.cgroup_id()
        bad = [c for c in self.syscall_classes if c not in SYSCALL_CLASSES]
        if bad:
            raise TunerError(f"unknown syscall class {bad[0]!r}",
                             f"choose from {', '.join(SYSCALL_CLASSES)}")  # fmt: skip
        if not 0.0 < self.syscall_duty <= 1.0:
            raise TunerError(f"syscall duty must be in (0, 1]; got {self.syscall_duty!r}")
        if self.syscall_period_ms % self.window_ms or self.syscall_period_ms < self.window_ms:
            raise TunerError(
                f"syscall period {self.syscall_period_ms} ms is not a whole number of "
                f"{self.window_ms} ms windows",
                "give a multiple of the window",
            )
        return self

    def cgroup_id(self) -> int:
        """Return the cgroup v2 id (the directory's inode) of :attr:`cgroup`."""
        assert self.cgroup is not None
        candidates = [self.cgroup] + [
            os.path.join(r, self.cgroup.lstrip("/")) for r in CGROUP2_ROOTS
        ]
        for path in candidates:
            if os.path.isfile(os.path.join(path, "cgroup.procs")):
                return os.stat(path).st_ino
        raise TunerError(
            f"cgroup {self.cgroup!r} not found under {' or '.join(CGROUP2_ROOTS)}",
            "give a cgroup v2 directory path",
        )

    def cflags(self) -> list[str]:
        """Return the -D defines that carry these options to the BPF side."""
        flags = [
            f"-DWINDOW_NS={self.window_ms * 1_000_000}ULL",
            f"-DMAX_ENTITIES={self.max_entities}",
            f"-DMAX_CPUS={self.max_cpus}",
            f"-DRINGBUF_PAGES={self.ringbuf_pages}",
            f"-DLATENCY_SAMPLE={self.latency_sample}",
        ]
        if self.pids:
            flags.append("-DFILTER_PIDS=1")
        if self.cgroup is not None:
            flags.append("-DFILTER_CGROUP=1")
        if self.comm is not None:
            flags.append(f'-DFILTER_COMM="{self.comm}"')
        return flags
