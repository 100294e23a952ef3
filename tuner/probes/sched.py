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
from tuner.probes.base import Frame, Probe

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
        if r.kind == KIND_CPU:
            entity, labels = f"cpu:{r.id}", {}
        else:
            entity = f"task:{r.id}"
            labels = {"tgid": str(r.tgid), "comm": r.comm.decode(errors="replace")}
        return Frame(
            self.name,
            entity,
            r.window_start,
            r.window_end,
            {c: float(getattr(r, c)) for c in COUNTERS},
            labels,
        )
