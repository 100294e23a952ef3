"""The floor under the probes' cost: empty programs on their attach points (bpf/bench_floor.c).

What a workload loses with these attached is the price of the attach points themselves (the
tracepoint slow path of each syscall, the program calls), which no probe on them can
undercut; ``tuner bench overhead`` reports the probes' cost beside it.

>>> FLOORS["sysfloor"]
['-DONLY_RAW_SYSCALLS']
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

#: Empty-program arms and the defines bpf/bench_floor.c gets for them: ``floor`` is every
#: attach point the probes use, ``sysfloor`` raw_syscalls sys_enter and sys_exit only.
FLOORS = {"floor": [], "sysfloor": ["-DONLY_RAW_SYSCALLS"]}


@contextlib.contextmanager
def empty_programs(arm: str) -> Iterator[dict[str, int]]:
    """Attach the empty programs of ``arm`` (a key of :data:`FLOORS`) while the block runs;
    yield them by attach point (their fds)."""
    from tuner import bcc_runtime

    floor = bcc_runtime.compile_program(
        src_file=bcc_runtime.bpf_dir() / "bench_floor.c", cflags=FLOORS[arm]
    )
    try:
        yield bcc_runtime.attached_programs(floor)
    finally:
        floor.cleanup()
