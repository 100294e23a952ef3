"""The steering lease's jiffies clock: calibration against this kernel, and its failures."""

from __future__ import annotations

import time

import pytest

from tuner.errors import TunerError
from tuner.jiffies import JiffiesClock, kernel_hz, parse_timer_list, read_clock


def test_measured_tick_rate_agrees_with_the_kernel_config(tmp_path):
    measured = kernel_hz(config=str(tmp_path / "no-config.gz"))  # forces the measurement
    assert measured == kernel_hz()


def test_calibration_predicts_the_kernels_jiffies():
    clock = read_clock()
    time.sleep(0.3)
    mono_ns, jiffies = parse_timer_list(open("/proc/timer_list").read())
    # at() rounds up and adds a tick: the real count is at most two ticks below it
    assert 0 <= clock.at(mono_ns) - jiffies <= 2


def test_deadline_never_passes_before_its_nanosecond_time():
    clock = JiffiesClock(hz=1000, jiffies=10, mono_ns=0)
    assert clock.at(1) == 12 and clock.at(1_000_000) == 12 and clock.at(1_000_001) == 13


def test_missing_timer_list_is_a_one_line_error(tmp_path):
    with pytest.raises(TunerError) as e:
        read_clock(timer_list=str(tmp_path / "timer_list"))
    assert "timer_list" in str(e.value) and "\n" not in str(e.value)
