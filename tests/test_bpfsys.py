"""Raw bpf(2) helpers against the real kernel."""

from __future__ import annotations

import os

import pytest

from tuner import bcc_runtime, bpfsys
from tuner.bpfsys import MapType, ProgType

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize(
    "map_type,key,value,entries",
    [
        (MapType.ARRAY, 4, 8, 4),
        (MapType.RINGBUF, 0, 0, 4096),
        (MapType.SOCKMAP, 4, 4, 2),
        (MapType.DEVMAP, 4, 4, 2),
        (MapType.CPUMAP, 4, 4, 1),
        (MapType.LRU_HASH, 8, 8, 16),
    ],
)
def test_map_create(map_type, key, value, entries):
    fd = bpfsys.map_create(map_type, key, value, entries, name="tuner_test")
    assert fd > 2
    os.close(fd)


def test_map_create_reports_errno():
    with pytest.raises(OSError) as e:
        bpfsys.map_create(MapType.RINGBUF, 0, 0, 1000)  # not a power of two
    assert e.value.errno == 22


def test_prog_test_run_returns_verdict_and_duration():
    bpf = bcc_runtime.compile_program(text="int x(struct xdp_md *c) { return XDP_DROP; }")
    try:
        fn = bcc_runtime.load_function(bpf, "x", ProgType.XDP)
        run = bpfsys.prog_test_run(fn.fd, bytes(60), repeat=1000, out_size=128)
        assert run.retval == 1  # XDP_DROP
        assert run.duration_ns >= 0
        assert run.data_out == bytes(60)
    finally:
        bpf.cleanup()


def test_run_statistics_count_runs_while_enabled_only():
    """bpfstats: the kernel times every run of a program while the statistics are on (through
    the fd BPF_ENABLE_STATS returns), and stops when they go off."""
    from tuner import bpfstats

    bpf = bcc_runtime.compile_program(text="int x(struct xdp_md *c) { return XDP_PASS; }")
    try:
        fd = bcc_runtime.load_function(bpf, "x", ProgType.XDP).fd
        with bpfstats.enabled():
            before = bpfstats.prog_stats(fd)
            bpfsys.prog_test_run(fd, bytes(60), repeat=1000)
            during = bpfstats.prog_stats(fd) - before
        bpfsys.prog_test_run(fd, bytes(60), repeat=1000)
        after = bpfstats.prog_stats(fd) - before
    finally:
        bpf.cleanup()
    assert during.runs == 1000 and during.run_ns > 0 and during.ns_per_run > 0
    # off again, unless another process on the host keeps them on
    if open("/proc/sys/kernel/bpf_stats_enabled").read().strip() == "0":
        assert after.runs == during.runs
