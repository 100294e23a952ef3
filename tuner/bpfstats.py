"""What each attached BPF program costs per run, as the kernel counts it.

With run-time statistics on (``BPF_ENABLE_STATS``), the kernel times every run of every
program and adds it to the program's ``run_time_ns`` and ``run_cnt`` (``struct
bpf_prog_info``). :func:`enabled` turns them on for as long as a block runs, through a file
descriptor rather than the ``kernel.bpf_stats_enabled`` sysctl, so they go off again when the
process ends however it ends. The timing costs two clock reads per run of every program on the
host while it is on, so a throughput measured at the same time is not the program's alone:
use these figures for the split between programs, and throughput arms for the total.

The offsets of the two counters are the running kernel's, read from its BTF.

>>> RunStats(runs=4, run_ns=400).ns_per_run
100.0
>>> (RunStats(10, 1500) - RunStats(4, 400)).ns_per_run
183.33333333333334
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from tuner import bpfsys
from tuner.btf import Btf
from tuner.errors import TunerError

BPF_OBJ_GET_INFO_BY_FD = 15
BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0
_INFO_SIZE = 256  # at least sizeof(struct bpf_prog_info) up to run_cnt; the tail stays zero


@dataclass(frozen=True)
class RunStats:
    """A program's runs and the nanoseconds they took, since it was loaded."""

    runs: int
    run_ns: int

    @property
    def ns_per_run(self) -> float:
        return self.run_ns / self.runs if self.runs else 0.0

    def __sub__(self, earlier: RunStats) -> RunStats:
        return RunStats(self.runs - earlier.runs, self.run_ns - earlier.run_ns)


@functools.cache
def _offsets() -> tuple[int, int]:
    btf = Btf.load()
    return (
        btf.member_offset("bpf_prog_info", "run_time_ns"),
        btf.member_offset("bpf_prog_info", "run_cnt"),
    )


def prog_stats(prog_fd: int) -> RunStats:
    """The run statistics of the loaded program ``prog_fd`` (zero while they were off)."""
    run_time_off, run_cnt_off = _offsets()
    info = ctypes.create_string_buffer(_INFO_SIZE)
    attr = bytearray(bpfsys.ATTR_SIZE)
    struct.pack_into("IIQ", attr, 0, prog_fd, _INFO_SIZE, ctypes.addressof(info))
    bpfsys.bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    (run_ns,) = struct.unpack_from("Q", info.raw, run_time_off)
    (runs,) = struct.unpack_from("Q", info.raw, run_cnt_off)
    return RunStats(runs, run_ns)


@contextlib.contextmanager
def enabled() -> Iterator[None]:
    """Keep the kernel's per-program run statistics on while the block runs."""
    attr = bytearray(bpfsys.ATTR_SIZE)
    struct.pack_into("I", attr, 0, BPF_STATS_RUN_TIME)
    try:
        fd = bpfsys.bpf(BPF_ENABLE_STATS, attr)
    except OSError as e:
        raise TunerError(
            f"cannot turn on BPF run-time statistics: {e.strerror}",
            "run as root on a kernel >= 5.8",
        ) from e
    try:
        yield
    finally:
        os.close(fd)
