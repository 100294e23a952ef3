"""What both steering actuators share: the mode, the lease, table checks, atomic table writes,
and pins under one bpffs folder so that ``tuner cleanup`` can remove what a crash left.

An indirection table is a list of :data:`SLOTS` target indices: slot ``hash & (SLOTS - 1)``
of a new connection or flow goes to target ``table[slot]``.

>>> check_table([0, 1] * 128, targets=2, min_share=0.25)
>>> check_table([0] * 256, targets=2, min_share=0.1)
Traceback (most recent call last):
...
tuner.errors.TunerError: table gives target 1 a share of 0.000, below the minimum 0.100
>>> check_table([0, 5] * 128, targets=2)
Traceback (most recent call last):
...
tuner.errors.TunerError: table names target 5, which is not in the group of 2
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner import bpfsys, system
from tuner.actuate.lease import JiffiesClock, read_clock
from tuner.errors import TunerError

SLOTS = 256
MAX_TARGETS = 64  # sockets of a reuseport group / XDP targets (bpf/steer.h, passed as -D)
MODES = ("shadow", "active")
PIN_ROOT = "/sys/fs/bpf/tuner"
STATE_ROOT = "/run/tuner"  # bpffs holds only BPF objects: attachment notes for cleanup go here


def check_table(
    table: Sequence[int], targets: int, min_share: float = 0.0, live: Sequence[int] | None = None
) -> None:
    """Refuse a table that names a target outside the group or starves a live target."""
    if len(table) != SLOTS:
        raise TunerError(f"table has {len(table)} slots; it must have {SLOTS}")
    counts = Counter(table)
    for t in counts:
        if not isinstance(t, int) or not 0 <= t < targets:
            raise TunerError(f"table names target {t}, which is not in the group of {targets}")
    for t in range(targets) if live is None else live:
        share = counts.get(t, 0) / SLOTS
        if share < min_share:
            raise TunerError(
                f"table gives target {t} a share of {share:.3f}, below the minimum {min_share:.3f}"
            )


def even_table(targets: Sequence[int]) -> list[int]:
    """A table that spreads the slots evenly over ``targets``.

    >>> Counter(even_table([0, 2]))
    Counter({0: 128, 2: 128})
    """
    return [targets[i % len(targets)] for i in range(SLOTS)]


@dataclass
class Decision:
    """One call of ``apply``: what was asked and whether it reached the kernel."""

    time: float
    mode: str
    table: list[int]
    written: bool
    generation: int


@dataclass
class Steering:
    """Base of the actuators. Subclasses load their program and implement the map access.

    Parameters
    ----------
    name : str
        Names the pin folder ``/sys/fs/bpf/tuner/<name>``.
    mode : {"shadow", "active"}
        shadow: ``apply`` records what it would write and writes nothing.
    lease_ms : int
        How long a written table stays in force without renewal, in milliseconds.
    min_share : float
        Smallest share of the slots any live target may get, in [0, 1 / targets].
    """

    name: str = "steer"
    mode: str = "shadow"
    lease_ms: int = 1000
    min_share: float = 0.0
    #: the latest decisions (at most 1000, so that a long-running agent does not grow)
    decisions: deque[Decision] = field(default_factory=lambda: deque(maxlen=1000), init=False)
    _bpf: Any = field(default=None, init=False, repr=False)
    _generation: int = field(default=0, init=False)
    _clock: JiffiesClock | None = field(default=None, init=False, repr=False)

    # -- to be provided by subclasses -----------------------------------------------------
    def targets(self) -> int:
        raise NotImplementedError

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
    def open(self) -> Steering:
        self._validate()
        pins = self.pin_dir()
        if pins.exists():
            raise TunerError(
                f"{pins} exists: another tuner steers under the name {self.name!r} or one crashed",
                "run `tuner cleanup`, or pick another name",
            )
        # checked before anything is loaded, so that a failure leaves nothing behind
        require_bpffs(Path(PIN_ROOT).parent)
        self._clock = read_clock()
        try:
            self._load()
            pins.mkdir(parents=True)
            for map_name in ("lease", "ctl", "tables"):
                bpfsys.obj_pin(self._bpf[map_name.encode()].map_fd, str(pins / map_name))
            state = {"kind": type(self).__name__, "pid": os.getpid(), **self._state()}
            state_file(self.name).parent.mkdir(parents=True, exist_ok=True)
            state_file(self.name).write_text(json.dumps(state))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Detach the program, free the maps, remove the pins. Safe to call twice."""
        if self._bpf is not None:
            try:
                self._detach()
            finally:
                bpf, self._bpf = self._bpf, None
                bpf.cleanup()
        remove_pins(self.pin_dir())

    def __enter__(self) -> Steering:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pin_dir(self) -> Path:
        return Path(PIN_ROOT) / self.name

    # -- decisions ------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        """Switch mode at run time. Going to shadow stops writes; the lease then lapses."""
        if mode not in MODES:
            raise TunerError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        self.mode = mode

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
        if self.mode not in MODES:
            raise TunerError(
                f"The 'mode' parameter of {type(self).__name__} must be one of "
                f"{', '.join(MODES)}. Got {self.mode!r} instead."
            )
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


def read_pins(name: str) -> dict[str, Any]:
    """What the kernel holds for steering ``name``, read through its pins (from any process):
    ``generation`` (0: no table written), ``lease_left_ms`` (<= 0: lapsed, kernel default)
    and ``table``. For audits and tests."""
    pins = Path(PIN_ROOT) / name
    fds = {}
    try:
        for m in ("lease", "ctl", "tables"):
            fds[m] = bpfsys.obj_get(str(pins / m))
    except OSError:
        for fd in fds.values():
            os.close(fd)
        raise TunerError(f"no steering named {name!r} is pinned", "is the agent running?") from None
    try:
        zero = struct.pack("I", 0)
        deadline, _ = struct.unpack("QQ", bpfsys.map_lookup(fds["lease"], zero, 16))
        active, generation = struct.unpack("II", bpfsys.map_lookup(fds["ctl"], zero, 8))
        raw = bpfsys.map_lookup(fds["tables"], struct.pack("I", active & 1), 4 * SLOTS)
    finally:
        for fd in fds.values():
            os.close(fd)
    return {
        "generation": generation,
        "lease_left_ms": (deadline - time.monotonic_ns()) / 1e6,
        "table": list(struct.unpack(f"{SLOTS}I", raw)),
    }


def state_file(name: str) -> Path:
    """Where a steering actuator notes what it attached, for ``tuner cleanup``."""
    return Path(STATE_ROOT) / f"{name}.json"


def require_bpffs(path: Path) -> None:
    """Raise TunerError unless the BPF file system is mounted at ``path`` (the pins of
    every steering program live there, so that `tuner cleanup` finds them after a crash).

    >>> try:
    ...     require_bpffs(Path("/proc"))
    ... except TunerError as e:
    ...     print(e.problem)
    the BPF file system is not mounted at /proc (proc is)
    """
    kind = system.mount_type(str(path))
    if kind != "bpf":
        raise TunerError(
            f"the BPF file system is not mounted at {path} ({kind or 'nothing'} is)",
            f"mount -t bpf bpf {path}, or run `make setup`",
        )


def remove_pins(pins: Path) -> None:
    """Remove a steering pin folder and its state file (unpinning frees unused maps)."""
    if pins.exists():
        shutil.rmtree(pins, ignore_errors=True)
    state_file(pins.name).unlink(missing_ok=True)
