"""What both steering actuators share: the mode, the lease, table checks, atomic table writes,
and pins under one bpffs folder so that ``tuner cleanup`` can remove what a crash left.

An indirection table (:mod:`tuner.table`) is a list of :data:`~tuner.table.SLOTS` target
indices: slot ``hash & (SLOTS - 1)`` of a new connection or flow goes to target
``table[slot]``. Tables are checked with :func:`tuner.table.check_table`, the rule the policy
makes them by.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner import bpfsys
from tuner.actuate.pins import (
    PIN_ROOT,
    PINNED,
    NameLock,
    check_layouts,
    check_name,
    remove_pins,
    require_bpffs,
    state_file,
)
from tuner.actuate.steering import MODES, Decision, Placement, check_mode
from tuner.errors import TunerError
from tuner.jiffies import JiffiesClock, read_clock
from tuner.table import SLOTS, check_table

MAX_TARGETS = 64  # sockets of a reuseport group / XDP targets (bpf/steer.h, passed as -D)
MAX_CLIENTS = 4096  # heavy clients the reuseport program places by source address (bpf/steer.h)


@dataclass
class BpfSteering:
    """Base of the BPF actuators (:class:`~tuner.actuate.steering.Steering`). Subclasses load
    their program and implement the map access.

    Parameters
    ----------
    name : str
        Names the pin folder ``/sys/fs/bpf/tuner/<name>``.
    mode : {"shadow", "active"}
        shadow: ``apply`` records what it would write and writes nothing.
    lease_ms : int
        How long a written table stays in force without renewal, in milliseconds.
    min_share : float
        Smallest share of the slots any live target may get, in [0, 1]; tables are checked
        by :func:`tuner.table.check_table`, so in whole slots, at most half an even split.
    """

    name: str = "steer"
    mode: str = "shadow"
    lease_ms: int = 1000
    min_share: float = 0.0
    #: more for ``tuner cleanup`` to undo after a crash (the agent's control socket)
    note: dict = field(default_factory=dict)
    #: the latest decisions (at most 1000, so that a long-running agent does not grow)
    decisions: deque[Decision] = field(default_factory=lambda: deque(maxlen=1000), init=False)
    _bpf: Any = field(default=None, init=False, repr=False)
    _generation: int = field(default=0, init=False)
    _clock: JiffiesClock | None = field(default=None, init=False, repr=False)
    _lock: NameLock | None = field(default=None, init=False, repr=False)
    _owns_pins: bool = field(default=False, init=False, repr=False)
    _final: Placement | None = field(default=None, init=False, repr=False)

    # -- to be provided by subclasses -----------------------------------------------------
    def targets(self) -> int:
        raise NotImplementedError

    def _placement(self) -> Placement:
        """The placement counts in the loaded program's maps."""
        raise NotImplementedError

    def placement(self) -> Placement:
        """What the program placed by the table and left to the kernel since load; once
        closed, what it had counted when it was detached."""
        if self._bpf is None:
            return self._final or Placement((0,) * self.targets())
        return self._placement()

    def _load(self) -> None:
        raise NotImplementedError

    def _detach(self) -> None:
        raise NotImplementedError

    def _map_key(self, target: int) -> int:
        """The key the datapath uses for target index ``target`` (the index, by default)."""
        return target

    def _state(self) -> dict:
        """What ``tuner cleanup`` needs to undo the attachment after a crash."""
        return {}

    # -- lifecycle ------------------------------------------------------------------------
    def open(self) -> BpfSteering:
        """Take the name (its lock, before anything else), load and attach the program, pin
        its maps and note what was attached. A failure undoes all of it and touches nothing
        that belongs to another owner of the name."""
        self._validate()
        # checked before anything is loaded, so that a failure leaves nothing behind
        require_bpffs(Path(PIN_ROOT).parent)
        self._lock = NameLock(self.name).acquire()
        try:
            pins = self.pin_dir()
            if pins.exists():  # the lock is free: left by a tuner that crashed
                raise TunerError(
                    f"{pins} was left by a tuner that crashed under the name {self.name!r}",
                    "run `tuner cleanup`, or pick another name",
                )
            self._clock = read_clock()
            self._load()
            check_layouts(self._bpf, type(self).__name__)
            pins.mkdir(parents=True)
            self._owns_pins = True
            for map_name in PINNED:
                bpfsys.obj_pin(self._bpf[map_name.encode()].map_fd, str(pins / map_name))
            self.note_state()
        except BaseException:
            self.close()
            raise
        return self

    def note_state(self) -> None:
        """Write (again) what ``tuner cleanup`` needs to undo this steering after a crash."""
        state = {"kind": type(self).__name__, "pid": os.getpid(), **self._state(), **self.note}
        state_file(self.name).write_text(json.dumps(state))

    def close(self) -> None:
        """Detach the program, free the maps, remove the pins it made and let go of the name.
        Safe to call twice."""
        try:
            if self._bpf is not None:
                try:
                    self._final = self._placement()  # the counts go with the maps
                except Exception:  # a report: never a reason to stay attached
                    self._final = None
                try:
                    self._detach()
                finally:
                    bpf, self._bpf = self._bpf, None
                    bpf.cleanup()
        finally:
            if self._owns_pins:
                remove_pins(self.pin_dir())
                self._owns_pins = False
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> BpfSteering:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pin_dir(self) -> Path:
        return Path(PIN_ROOT) / self.name

    # -- decisions ------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        """Switch mode at run time. Going to shadow stops writes; the lease then lapses."""
        self.mode = check_mode(mode)

    @property
    def counts_flows(self) -> bool:
        """Per-flow counting and pinning: only a UDP reuseport group has it."""
        return False

    def flow_hits(self) -> dict[int, int]:
        return {}

    def set_overrides(self, overrides: Mapping[int, int]) -> bool:
        if overrides:
            raise TunerError(f"{type(self).__name__} cannot pin flows")
        return False

    @property
    def places_clients(self) -> bool:
        """Placement of new connections by client address: only a reuseport group has it."""
        return False

    def set_clients(self, clients: Mapping[str, int]) -> bool:
        if clients:
            raise TunerError(f"{type(self).__name__} cannot place clients")
        return False

    def apply(self, table: Sequence[int], live: Sequence[int] | None = None) -> Decision:
        """Check ``table``; in active mode write it atomically and renew the lease, in shadow
        mode only record it."""
        table = [int(t) for t in table]
        check_table(table, self.targets(), self.min_share, live)
        written = self.mode == "active"
        if written:
            self._write_table(table)
            self.renew()
        d = Decision(time.time(), self.mode, table, written, self._generation)
        self.decisions.append(d)
        return d

    def renew(self) -> None:
        """Extend the lease by ``lease_ms`` from now (active mode only)."""
        if self.mode == "active" and self._bpf is not None and self._clock is not None:
            deadline = time.monotonic_ns() + self.lease_ms * 1_000_000
            self._write_lease(deadline, self._clock.at(deadline))

    def expire(self) -> None:
        """End the lease now: the datapath falls back to kernel defaults at once."""
        if self._bpf is not None:
            self._write_lease(0, 0)

    def _write_lease(self, deadline_ns: int, deadline_jiffies: int) -> None:
        lease = self._bpf[b"lease"]
        lease[lease.Key(0)] = lease.Leaf(deadline_ns, deadline_jiffies)

    def live_table(self) -> tuple[int, list[int]]:
        """(generation, table of map keys) as the kernel holds them; generation 0 means none
        written."""
        ctl = self._bpf[b"ctl"][self._bpf[b"ctl"].Key(0)]
        tb = self._bpf[b"tables"][self._bpf[b"tables"].Key(ctl.active & 1)]
        return int(ctl.generation), list(tb.target)

    def _write_table(self, table: list[int]) -> None:
        tables, ctl_map = self._bpf[b"tables"], self._bpf[b"ctl"]
        ctl = ctl_map[ctl_map.Key(0)]
        spare = (ctl.active + 1) & 1 if ctl.generation else 0
        leaf = tables.Leaf()
        for i, t in enumerate(table):
            leaf.target[i] = self._map_key(t)
        tables[tables.Key(spare)] = leaf
        self._generation = int(ctl.generation) + 1
        ctl_map[ctl_map.Key(0)] = ctl_map.Leaf(spare, self._generation)

    def _validate(self) -> None:
        check_name(self.name)
        if self.mode not in MODES:
            raise TunerError(
                f"The 'mode' parameter of {type(self).__name__} must be one of "
                f"{', '.join(MODES)}. Got {self.mode!r} instead."
            )
        check_layout_constants()
        if not isinstance(self.lease_ms, int) or not 50 <= self.lease_ms <= 60000:
            raise TunerError(
                f"The 'lease_ms' parameter of {type(self).__name__} must be an int "
                f"in the range [50, 60000]. Got {self.lease_ms!r} instead."
            )
        if not 0 <= self.min_share <= 1:
            raise TunerError(
                f"The 'min_share' parameter of {type(self).__name__} must be in "
                f"[0, 1]. Got {self.min_share!r} instead."
            )


def check_layout_constants(header: str = "steer.h") -> None:
    """The constants bpf/steer.h shares with this side must agree with it (the loaders pass
    MAX_TARGETS as -D; STEER_SLOTS is the table's size)."""
    from tuner.bcc_runtime import check_constants

    check_constants(
        header, {"STEER_SLOTS": SLOTS, "MAX_TARGETS": MAX_TARGETS, "MAX_CLIENTS": MAX_CLIENTS}
    )
