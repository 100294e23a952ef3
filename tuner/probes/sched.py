"""Scheduler probe (``bpf/sched.c``): per task and per CPU on-CPU time, run-queue wait,
voluntary and involuntary switches, migrations, wakeups.

>>> from tuner.probes.sched import SchedRecord
>>> ctypes.sizeof(SchedRecord)
104
"""

from __future__ import annotations

import ctypes

from tuner.btf import Btf, check_raw_tracepoints, field_offset
from tuner.errors import TunerError
from tuner.probes.base import Frame, Probe, c_string, struct_of

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
RAW_ARGS = {"sched_switch": ["bool", TASK, TASK, "unsigned int"]}

#: The task_struct fields bpf/sched.c reads, as -D names and paths through nested structs:
#: the scheduler's own accounting of each task (CONFIG_SCHED_INFO for ``sched_info``).
FIELDS = {
    "TASK_PID_OFF": ("task_struct", "pid"),
    "TASK_SUM_EXEC_OFF": ("task_struct", "se", "sched_entity", "sum_exec_runtime"),
    "TASK_MIGRATIONS_OFF": ("task_struct", "se", "sched_entity", "nr_migrations"),
    "TASK_RUN_DELAY_OFF": ("task_struct", "sched_info", "sched_info", "run_delay"),
    "TASK_PCOUNT_OFF": ("task_struct", "sched_info", "sched_info", "pcount"),
}


def kernel_defines(btf: Btf) -> list[str]:
    """Check the raw tracepoint's prototype against :data:`RAW_ARGS` and return the offsets of
    :data:`FIELDS` as ``-D`` flags, all from the running kernel's BTF.

    >>> kernel_defines(Btf.load())  # doctest: +ELLIPSIS
    ['-DTASK_PID_OFF=...', '-DTASK_SUM_EXEC_OFF=...', ...]
    """
    check_raw_tracepoints(btf, RAW_ARGS, "bpf/sched.c")
    try:
        return [f"-D{name}={field_offset(btf, path)}" for name, path in FIELDS.items()]
    except TunerError as e:
        raise TunerError(
            f"the scheduler probe reads the scheduler's own accounting, and {e.problem}",
            "a kernel with CONFIG_SCHED_INFO (set by CONFIG_SCHEDSTATS or CONFIG_TASK_DELAY_ACCT)",
        ) from None


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
    """Raw tracepoint ``sched_switch``. Entities ``task:<tid>`` and ``cpu:<n>``."""

    name = "sched"
    constants = {"SCHED_KIND_TASK": KIND_TASK, "SCHED_KIND_CPU": KIND_CPU}
    record_type = SchedRecord

    def kernel_cflags(self) -> list[str]:
        return kernel_defines(Btf.load())

    def frame_of(self, raw: bytes) -> Frame:
        """The frame of one record's bytes (``struct sched_record``): one per active task per
        window, so read with one unpack (a third of the cost through the ctypes mirror).

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
            labels = {"tgid": str(tgid), "comm": c_string(comm)}
        features = dict(zip(COUNTERS, map(float, counts), strict=True))
        return Frame(self.name, entity, start, end, features, labels)
