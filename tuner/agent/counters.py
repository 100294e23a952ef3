"""What the probes' kernel-side counters tell the agent: records lost, entities refused.

A probe observes at most ``agent.max_entities`` entities at once (tasks, sockets: a slot
each). Beyond that it refuses them: they are counted (``overflow``) and not observed. A
server with more threads than slots, or one that opens connections faster than closed ones
give their slots back (``agent.sockets`` under connection churn), is then measured in part.
:class:`ProbeCounters` keeps the counts for the status and the metrics, and says so, in one
line that names the fix, when a probe starts refusing, and again at most once a minute while
it goes on.

>>> from tuner.probes.base import ProbeStats
>>> c = ProbeCounters(slots=256, clock=lambda: 0.0)
>>> c.update({"sched": ProbeStats(10, 5, 0, 0, 3), "net": ProbeStats(99, 40, 1, 0, 3)})
[]
>>> print(*c.update({"sched": ProbeStats(20, 9, 0, 0, 6), "net": ProbeStats(999, 80, 1, 7, 6)}))
net probe: 7 sockets not observed, all 256 slots taken; fix: raise agent.max_entities (at most 384)
>>> c.lost, c.refused
(1, {'sched': 0, 'net': 7})
>>> c.update({"net": ProbeStats(1999, 90, 1, 9, 9)})  # within the minute: counted, not said
[]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tuner.probes.base import ProbeStats
from tuner.probes.config import MAX_SLOTS

#: what each probe's entities are, for the line that says they were refused
ENTITIES = {"sched": "tasks", "net": "sockets", "syscalls": "tasks"}
SAY_EVERY_S = 60.0


@dataclass
class ProbeCounters:
    """The last reading of every probe's counters (since it was loaded)."""

    slots: int
    clock: Callable[[], float] = time.monotonic
    lost: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    _said: dict[str, tuple[float, int]] = field(default_factory=dict)

    def update(self, stats: Mapping[str, ProbeStats]) -> list[str]:
        """Take a reading (:meth:`tuner.probes.stream.FeatureStream.stats`); return a line
        for each probe that refused entities it had not been said to refuse, and for each
        that refused more since it was last said, a minute or more ago."""
        self.lost = sum(s.lost for s in stats.values())
        lines = []
        now = self.clock()
        for name, s in stats.items():
            self.refused[name] = s.overflow
            at, count = self._said.get(name, (None, 0))
            if s.overflow > count and (at is None or now - at >= SAY_EVERY_S):
                self._said[name] = (now, s.overflow)
                what = ENTITIES.get(name, "entities")
                lines.append(
                    f"{name} probe: {s.overflow - count} {what} not observed, all {self.slots}"
                    f" slots taken; fix: {self.fix(name)}"
                )
        return lines

    def fix(self, probe: str) -> str:
        """What to change when ``probe`` refuses entities.

        >>> ProbeCounters(MAX_SLOTS).fix("net")
        'a shorter agent.window_ms (closed sockets give their slots back at each window)'
        >>> ProbeCounters(MAX_SLOTS).fix("sched")
        'steer fewer tasks (a probe observes at most 384)'
        """
        if self.slots < MAX_SLOTS:
            return f"raise agent.max_entities (at most {MAX_SLOTS})"
        if probe == "net":
            return "a shorter agent.window_ms (closed sockets give their slots back at each window)"
        return f"steer fewer tasks (a probe observes at most {MAX_SLOTS})"
