"""The kernel's BTF as the scheduler probe reads it: struct offsets and tracepoint prototypes."""

import struct

import pytest

from tuner.btf import Btf
from tuner.errors import TunerError
from tuner.probes.sched import FIELDS, RAW_ARGS, kernel_defines


def test_running_kernel_gives_the_pid_offset_and_the_expected_prototypes():
    btf = Btf.load()
    assert btf.member_offset("task_struct", "tgid") == btf.member_offset("task_struct", "pid") + 4
    for name, args in RAW_ARGS.items():
        assert btf.raw_tracepoint_args(name) == args
    defines = kernel_defines(btf)
    assert defines[0] == f"-DTASK_PID_OFF={btf.member_offset('task_struct', 'pid')}"
    assert [d.split("=")[0] for d in defines] == [f"-D{name}" for name in FIELDS]
    sum_exec = btf.member_offset("task_struct", "se") + btf.member_offset(
        "sched_entity", "sum_exec_runtime"
    )
    assert f"-DTASK_SUM_EXEC_OFF={sum_exec}" in defines


def _blob(types: bytes, strings: bytes) -> bytes:
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def test_a_changed_prototype_is_refused_with_a_clear_error():
    # btf_trace_sched_switch -> pointer -> proto (void *, int): not what bpf/sched.c reads
    strings = b"\0btf_trace_sched_switch\0int\0"
    intname = strings.index(b"int")
    types = (
        struct.pack("<3I", intname, 1 << 24, 4)
        + struct.pack("<I", 32)  # 1: int
        + struct.pack("<3I", 0, 2 << 24, 0)  # 2: void *
        + struct.pack("<3I", 0, (13 << 24) | 2, 0)
        + struct.pack("<4I", 0, 2, 0, 1)  # 3: proto
        + struct.pack("<3I", 0, 2 << 24, 3)  # 4: pointer to the proto
        + struct.pack("<3I", 1, 8 << 24, 4)  # 5: typedef btf_trace_sched_switch
    )
    btf = Btf(_blob(types, strings))
    assert btf.raw_tracepoint_args("sched_switch") == ["int"]
    with pytest.raises(TunerError, match="sched_switch tracepoint takes \\(int\\)"):
        kernel_defines(btf)


def test_a_corrupt_or_missing_btf_is_a_clear_error(tmp_path):
    with pytest.raises(TunerError, match="bad magic"):
        Btf(b"\0" * 64)
    with pytest.raises(TunerError, match="truncated"):
        Btf(_blob(struct.pack("<2I", 0, 1 << 24), b"\0"))
    with pytest.raises(TunerError, match="cannot read kernel BTF"):
        Btf.load(tmp_path / "absent")
    with pytest.raises(TunerError, match="has no task_struct"):
        Btf(_blob(b"", b"\0")).member_offset("task_struct", "pid")


def test_a_kernel_without_sched_info_is_a_clear_error():
    # a BTF with the tracepoint as bpf/sched.c reads it but a task_struct without sched_info
    class Without(Btf):
        def member_offset(self, struct_name: str, member: str) -> int:
            if member == "sched_info":
                raise TunerError(f"kernel BTF: struct {struct_name} has no member {member}")
            return super().member_offset(struct_name, member)

    with pytest.raises(TunerError, match="CONFIG_SCHED_INFO"):
        kernel_defines(Without.load())
