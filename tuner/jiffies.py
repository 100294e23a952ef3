"""Kernel jiffies against ``CLOCK_MONOTONIC``. BPF programs on hot paths compare
``bpf_jiffies64()`` with a deadline in jiffies, because the verifier inlines that helper into
one load, whereas any clock helper is a kernel call (tens of ns on a kernel with return-stack
mitigations): the steering programs' lease, and the probes' test for a window that may have
ended. The tuner thinks in ``CLOCK_MONOTONIC`` nanoseconds, so it calibrates once:
``/proc/timer_list`` gives the kernel's monotonic time and jiffies side by side, and
``/proc/config.gz`` the tick rate (or it is measured).

Jiffies advance from the same timekeeping as the monotonic clock, so one calibration holds for
the life of the actuator. A deadline is rounded up and given one tick of margin: the kernel
falls back at most about two ticks after the nanosecond deadline, never before it.

>>> clock = JiffiesClock(hz=250, jiffies=1000, mono_ns=5_000_000_000)
>>> clock.at(6_000_000_000)  # one second later: 250 ticks, plus one of margin
1251
>>> parse_timer_list("now at 5000 nsecs\\n...\\njiffies: 4294967296\\n")
(5000, 4294967296)
"""

from __future__ import annotations

import functools
import gzip
import re
import time
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import TunerError

TIMER_LIST = "/proc/timer_list"
KERNEL_CONFIG = "/proc/config.gz"
TICK_RATES = (100, 250, 300, 1000)  # the values CONFIG_HZ can take


@dataclass(frozen=True)
class JiffiesClock:
    """Kernel jiffies as a function of ``time.monotonic_ns()``."""

    hz: int
    jiffies: int
    mono_ns: int

    def at(self, mono_ns: int) -> int:
        """The jiffies deadline that passes just after monotonic time ``mono_ns``."""
        ticks = -(-(mono_ns - self.mono_ns) * self.hz // 1_000_000_000)  # rounded up
        return self.jiffies + ticks + 1


def parse_timer_list(text: str) -> tuple[int, int]:
    """(monotonic ns, jiffies) as read together from ``/proc/timer_list``."""
    now = re.search(r"^now at (\d+) nsecs", text, re.M)
    jiffies = re.search(r"^jiffies: (\d+)", text, re.M)
    if not now or not jiffies:
        raise ValueError("no 'now at' or 'jiffies:' line")
    return int(now.group(1)), int(jiffies.group(1))


def _sample(timer_list: str) -> tuple[int, int]:
    try:
        return parse_timer_list(Path(timer_list).read_text())
    except (OSError, ValueError) as e:
        raise TunerError(
            f"cannot read the kernel's jiffies from {timer_list}: {e}",
            "the steering lease needs /proc/timer_list (procfs, run as root)",
        ) from None


@functools.cache
def kernel_hz(config: str = KERNEL_CONFIG, timer_list: str = TIMER_LIST) -> int:
    """The kernel's tick rate: ``CONFIG_HZ`` if the kernel config is exposed, else measured
    over 0.2 s and rounded to the nearest rate the kernel can be built with. Found once per
    process (each probe and each steering program asks for it at load)."""
    try:
        with gzip.open(config, "rt") as f:
            for line in f:
                if line.startswith("CONFIG_HZ="):
                    return int(line.split("=", 1)[1])
    except (OSError, ValueError, EOFError):
        pass
    t0, j0 = _sample(timer_list)
    time.sleep(0.2)
    t1, j1 = _sample(timer_list)
    rate = (j1 - j0) * 1e9 / max(t1 - t0, 1)
    return min(TICK_RATES, key=lambda hz: abs(hz - rate))


def tick_ns(config: str = KERNEL_CONFIG, timer_list: str = TIMER_LIST) -> int:
    """Nanoseconds per kernel tick (see :func:`kernel_hz`)."""
    return 1_000_000_000 // kernel_hz(config, timer_list)


def read_clock(config: str = KERNEL_CONFIG, timer_list: str = TIMER_LIST) -> JiffiesClock:
    """Calibrate jiffies against ``time.monotonic_ns()`` now."""
    hz = kernel_hz(config, timer_list)
    mono_ns, jiffies = _sample(timer_list)
    return JiffiesClock(hz=hz, jiffies=jiffies, mono_ns=mono_ns)
