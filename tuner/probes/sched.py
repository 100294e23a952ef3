"""Scheduler probe (``bpf/sched.c``): per task and per CPU on-CPU time, run-queue wait,
voluntary and involuntary switches, migrations, wakeups.

>>> from tuner.probes.sched import SchedRecord
>>> ctypes.sizeof(SchedRecord)
104
"""

from __future__ import annotations

import ctypes
from typing import Any

from tuner.btf import Btf, check_raw_tracepoints
from tuner.probes.base import Frame, Probe, struct_of

KIND_TASK, KIND_CPU = 1, 2
COUNTERS = (
    "oncpu_ns",
    "runq_wait_ns",
    "runq_waits",
    "switches_vol",
    "switches_invol",
    "migrations",
    "wakeups",
)

#: The raw tracepoints' arguments as bpf/sched.c reads them (``ctx->args[i]``).
TASK = "struct task_struct *"
RAW_ARGS = {
    "sched_switch": ["bool", TASK, TASK, "unsigned int"],
    "sched_wakeup": [TASK],
    "sched_wakeup_new": [TASK],
    "sched_migrate_task": [TASK, "int"],
}


def kernel_defines(btf: Btf) -> list[str]:
    """Check the raw tracepoints' prototypes against :data:`RAW_ARGS` and return the offset of
    ``task_struct.pid`` as ``-DTASK_PID_OFF``, all from the running kernel's BTF.

    >>> kernel_defines(Btf.load())  # doctest: +ELLIPSIS
    ['-DTASK_PID_OFF=...']
    """
    check_raw_tracepoints(btf, RAW_ARGS, "bpf/sched.c")
    return [f"-DTASK_PID_OFF={btf.member_offset('task_struct', 'pid')}"]


class SchedRecord(ctypes.Structure):
    """Mirror of ``struct sched_record`` in ``bpf/sched.h``."""

    _fields_ = [
        ("window_start", ctypes.c_uint64),
        ("window_end", ctypes.c_uint64),
        ("kind", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tgid", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("comm", ctypes.c_char * 16),
    ] + [(c, ctypes.c_uint64) for c in COUNTERS]


RECORD = struct_of(SchedRecord)  # the same layout, for struct.unpack


class SchedProbe(Probe):
    """Raw tracepoints ``sched_switch``, ``sched_wakeup``, ``sched_wakeup_new``,
    ``sched_migrate_task``. Entities ``task:<tid>`` and ``cpu:<n>``."""

    name = "sched"
    constants = {"SCHED_KIND_TASK": KIND_TASK, "SCHED_KIND_CPU": KIND_CPU}
    record_type = SchedRecord

    def kernel_cflags(self) -> list[str]:
        return kernel_defines(Btf.load())

    def forget_tasks(self, tids: list[int]) -> None:
        tasks = self._bpf[b"tasks"]
        for tid in tids:
            try:
                del tasks[ctypes.c_uint32(tid)]
            except KeyError:
                pass

    def to_frame(self, r: Any) -> Frame:
        return self.frame_of(bytes(r))

    def decode(self, data: int, size: int) -> Frame | None:
        # a record per active task per window: read with one unpack instead of a ctypes
        # attribute per field (a third of the cost per record)
        return self.frame_of(ctypes.string_at(data, RECORD.size)) if size >= RECORD.size else None

    def frame_of(self, raw: bytes) -> Frame:
        """The frame of one record's bytes (``struct sched_record``).

        >>> r = SchedRecord(window_start=0, window_end=100, kind=KIND_TASK, id=7, tgid=5,
        ...                 comm=b"nginx", oncpu_ns=60)
        >>> f = SchedProbe.__new__(SchedProbe).frame_of(bytes(r))
        >>> f.entity, f.labels, f.features["oncpu_ns"], f.features["wakeups"]
        ('task:7', {'tgid': '5', 'comm': 'nginx'}, 60.0, 0.0)
        """
        start, end, kind, id_, tgid, _, comm, *counts = RECORD.unpack_from(raw)
        if kind == KIND_CPU:
            entity, labels = f"cpu:{id_}", {}
        else:
            entity = f"task:{id_}"
            labels = {"tgid": str(tgid), "comm": comm.split(b"\0", 1)[0].decode(errors="replace")}
        features = dict(zip(COUNTERS, map(float, counts), strict=True))
        return Frame(self.name, entity, start, end, features, labels)
