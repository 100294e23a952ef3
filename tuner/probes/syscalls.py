"""Syscall probe (``bpf/syscalls.c``): per process, syscalls by class, time in syscalls,
errors, and a log2 latency histogram.

>>> SYSCALL_CLASS[41], CLASSES[SYSCALL_CLASS[41]]   # socket(2)
(1, 'net')
>>> ctypes.sizeof(SysRecord)
416
"""

from __future__ import annotations

import ctypes
from typing import Any

from tuner.probes.base import Frame, Probe
from tuner.probes.config import SYSCALL_CLASSES as CLASSES

HIST_BUCKETS = 32
NR_MAX = 512  # entries of the `classes` map: syscall numbers 0 .. NR_MAX - 1
NOT_COUNTED = 0xFF  # the class of a syscall outside the interest set

# x86_64 syscall numbers by class (arch/x86/entry/syscalls/syscall_64.tbl). The class is
# decided by the syscall alone: read(2) on a socket counts as file I/O.
_NET = (40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 288, 299, 307)
_FILE = (
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    8,
    16,
    17,
    18,
    19,
    20,
    21,
    32,
    33,
    72,
    74,
    75,
    76,
    77,
    78,
    82,
    83,
    84,
    85,
    86,
    87,
    88,
    89,
    90,
    187,
    217,
    257,
    258,
    259,
    260,
    262,
    263,
    264,
    265,
    266,
    267,
    268,
    269,
    275,
    276,
    277,
    285,
    292,
    295,
    296,
    316,
    326,
    327,
    328,
    332,
    426,
    437,
)
_POLL = (7, 23, 24, 34, 35, 61, 128, 202, 208, 230, 232, 233, 247, 270, 271, 281, 441)
_MEM = (
    9,
    10,
    11,
    12,
    25,
    26,
    27,
    28,
    149,
    150,
    151,
    152,
    237,
    238,
    239,
    256,
    279,
    319,
    323,
    324,
    440,
)
SYSCALL_CLASS: dict[int, int] = {
    nr: cls for cls, nrs in ((1, _NET), (2, _FILE), (3, _POLL), (4, _MEM)) for nr in nrs
}


class SysAcc(ctypes.Structure):
    """Mirror of ``struct sys_acc`` in ``bpf/syscalls.h``."""

    _fields_ = [
        ("tgid", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("comm", ctypes.c_char * 16),
        ("calls", ctypes.c_uint64 * len(CLASSES)),
        ("time_ns", ctypes.c_uint64 * len(CLASSES)),
        ("errors", ctypes.c_uint64 * len(CLASSES)),
        ("hist", ctypes.c_uint64 * HIST_BUCKETS),
    ]


class SysRecord(ctypes.Structure):
    """Mirror of ``struct sys_record`` in ``bpf/syscalls.h``."""

    _fields_ = [("window_start", ctypes.c_uint64), ("window_end", ctypes.c_uint64), ("acc", SysAcc)]


class SyscallProbe(Probe):
    """Raw tracepoints ``sys_enter`` / ``sys_exit``. Entities ``proc:<tgid>``.

    Features: ``calls_<class>``, ``time_ns_<class>``, ``errors_<class>`` for each class in
    :data:`CLASSES`, ``calls``, ``time_ns``, ``errors`` (totals), ``lat_p50_ns`` and
    ``lat_p99_ns`` (from the histogram: the lower bound of the bucket), ``hist_<b>``.
    """

    name = "syscalls"
    constants = {"SYS_CLASSES": len(CLASSES), "SYS_HIST_BUCKETS": HIST_BUCKETS}
    record_type = SysRecord
    #: per-thread decisions live in task-local storage, which user space cannot clear; the
    #: program makes none until ``armed`` is set, after the filters are filled
    decision_maps = ("procs",)

    def setup(self, bpf: Any) -> None:
        table = bpf[b"classes"]
        wanted = {CLASSES.index(c) for c in self.config.syscall_classes} or set(range(len(CLASSES)))
        for nr in range(NR_MAX):
            cls = SYSCALL_CLASS.get(nr, 0)
            table[ctypes.c_int(nr)] = ctypes.c_uint8(cls if cls in wanted else NOT_COUNTED)
        bpf[b"armed"][ctypes.c_int(0)] = ctypes.c_uint32(1)
        self._windows = 0
        self._attached = True

    def poll(self) -> list[Frame]:
        """As :meth:`Probe.poll`, and the duty cycle: attached for the first
        ``syscall_duty`` of each ``syscall_period_ms``, detached for the rest (the raw
        tracepoints closed, so no syscall on the host pays for them)."""
        frames = super().poll()
        cfg = self.config
        if cfg.syscall_duty < 1.0:
            period = cfg.syscall_period_ms // cfg.window_ms
            on = max(1, round(cfg.syscall_duty * period))
            self._windows += 1
            self._attach(self._windows % period < on)
        return frames

    @property
    def attached(self) -> bool:
        """Whether the duty cycle has the raw tracepoints attached now."""
        return self._attached

    def _attach(self, attached: bool) -> None:
        if attached == self._attached:
            return
        for tp in (b"sys_enter", b"sys_exit"):
            if attached:
                self._bpf.attach_raw_tracepoint(tp=tp, fn_name=b"raw_tracepoint__" + tp)
            else:
                self._bpf.detach_raw_tracepoint(tp=tp)
        self._attached = attached

    def to_frame(self, r: Any) -> Frame:
        a = r.acc
        k = 1.0 / self.config.syscall_duty  # attached part of a period -> the whole period
        f: dict[str, float] = {}
        for i, cls in enumerate(CLASSES):
            f[f"calls_{cls}"] = k * a.calls[i]
            f[f"time_ns_{cls}"] = k * a.time_ns[i]
            f[f"errors_{cls}"] = k * a.errors[i]
        f["calls"] = k * sum(a.calls)
        f["time_ns"] = k * sum(a.time_ns)
        f["errors"] = k * sum(a.errors)
        hist = list(a.hist)
        f["lat_p50_ns"] = float(histogram_quantile(hist, 0.5))
        f["lat_p99_ns"] = float(histogram_quantile(hist, 0.99))
        f.update({f"hist_{b}": k * n for b, n in enumerate(hist) if n})
        return Frame(
            self.name,
            f"proc:{a.tgid}",
            r.window_start,
            r.window_end,
            f,
            {"comm": a.comm.decode(errors="replace")},
        )


def histogram_quantile(hist: list[int], q: float) -> int:
    """Lower bound (ns) of the log2 bucket that holds quantile ``q``; 0 for an empty histogram.

    >>> histogram_quantile([0, 0, 0, 10, 0, 1], 0.5)
    8
    >>> histogram_quantile([0, 0, 0, 10, 0, 1], 0.99)
    32
    """
    total = sum(hist)
    if not total:
        return 0
    need, seen = q * total, 0
    for b, n in enumerate(hist):
        seen += n
        if seen >= need:
            return 1 << b
    return 1 << (len(hist) - 1)
