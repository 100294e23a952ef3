"""The one interface every steering implements, and the steering that writes nothing.

The agent's channels talk to their steering through :class:`Steering` only. Optional
capabilities are declared, not probed: ``counts_flows`` says whether ``flow_hits`` and
``set_overrides`` do anything (a UDP reuseport group counts datagrams per flow and pins flows;
other steerings answer ``{}`` and ``False``).

Implementations: :class:`~tuner.actuate.reuseport.ReuseportSteering` (a SO_REUSEPORT group),
:class:`~tuner.actuate.xdp.XdpSteering` (new flows of an interface to CPUs, interfaces or
backend hosts) and :class:`NullSteering` (replays and recordings: checks every table as the
others do, writes nothing). ``tests/test_steering_conformance.py`` runs one check suite over
all of them.

>>> s = NullSteering(targets_=2, mode="active")
>>> d = s.apply([0, 1] * 128)
>>> d.written, s.counts_flows, s.flow_hits(), s.set_overrides({})
(False, False, {}, False)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from tuner.errors import TunerError
from tuner.table import check_table

MODES = ("shadow", "active")


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`.

    >>> check_mode("paused")
    Traceback (most recent call last):
    ...
    tuner.errors.TunerError: mode must be shadow or active; got 'paused'
    """
    if mode not in MODES:
        raise TunerError(f"mode must be shadow or active; got {mode!r}")
    return mode


@dataclass
class Decision:
    """One call of ``apply``: what was asked and whether it reached the kernel."""

    time: float
    mode: str
    table: list[int]
    written: bool
    generation: int


@dataclass(frozen=True)
class Placement:
    """What a steering's kernel side did since it was loaded: what its table placed, per
    target (new TCP connections, UDP datagrams, or an interface's new flows), and what it
    left to the kernel's own placement, by reason (no lease in force: shadow mode, a lapsed
    lease; the chosen socket gone; ...).

    >>> p = Placement((3, 1), {"no_lease": 2, "socket_gone": 0})
    >>> p.placed, p.left
    (4, 2)
    """

    by_target: tuple[int, ...] = ()
    kernel: Mapping[str, int] = field(default_factory=dict)

    @property
    def placed(self) -> int:
        return sum(self.by_target)

    @property
    def left(self) -> int:
        return sum(self.kernel.values())


@runtime_checkable
class Steering(Protocol):
    """What a channel needs of its steering."""

    name: str
    mode: str

    @property
    def counts_flows(self) -> bool:
        """Whether :meth:`flow_hits` and :meth:`set_overrides` do anything."""
        ...

    def targets(self) -> int:
        """How many targets the table may name."""
        ...

    def apply(self, table: Sequence[int]) -> Decision:
        """Check ``table``; active: write it and renew the lease; shadow: record it only."""
        ...

    def renew(self) -> None:
        """Keep the table in force for another lease (active mode only)."""
        ...

    def expire(self) -> None:
        """End the lease: the kernel's own placement at once."""
        ...

    def set_mode(self, mode: str) -> None: ...

    def flow_hits(self) -> dict[int, int]:
        """Datagrams per flow hash since the last call ({} unless ``counts_flows``)."""
        ...

    def set_overrides(self, overrides: Mapping[int, int]) -> bool:
        """Pin flow hashes to targets; True when written (False unless ``counts_flows``)."""
        ...

    @property
    def places_clients(self) -> bool:
        """Whether :meth:`set_clients` places new connections by their client's address."""
        ...

    def set_clients(self, clients: Mapping[str, int]) -> bool:
        """Send new connections of IPv4 client addresses to targets; True when written."""
        ...

    def placement(self) -> Placement:
        """What the kernel side placed by the table, and left to the kernel, since load."""
        ...

    def close(self) -> None: ...


@dataclass
class NullSteering:
    """A steering with ``targets_`` targets that checks what it is given and writes nothing:
    the kernel of a replay or a recording."""

    targets_: int = 1
    mode: str = "shadow"
    min_share: float = 0.0
    name: str = "null"
    decisions: list[Decision] = field(default_factory=list, init=False, repr=False)

    @property
    def counts_flows(self) -> bool:
        return False

    def targets(self) -> int:
        return self.targets_

    def apply(self, table: Sequence[int]) -> Decision:
        table = [int(t) for t in table]
        check_table(table, self.targets_, self.min_share)
        d = Decision(time.time(), self.mode, table, False, 0)
        self.decisions[:] = [d]
        return d

    def renew(self) -> None:
        pass

    def expire(self) -> None:
        pass

    def set_mode(self, mode: str) -> None:
        self.mode = check_mode(mode)

    def flow_hits(self) -> dict[int, int]:
        return {}

    def set_overrides(self, overrides: Mapping[int, int]) -> bool:
        return False

    @property
    def places_clients(self) -> bool:
        return True  # as a reuseport group would; nothing is written

    def set_clients(self, clients: Mapping[str, int]) -> bool:
        return False

    def placement(self) -> Placement:
        return Placement((0,) * self.targets_)

    def close(self) -> None:
        pass
