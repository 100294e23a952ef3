"""Where a steering leaves its traces, under one name: the lock that makes the name its own,
the pinned maps, the note for ``tuner cleanup``, and the map layouts read through the pins.

::

    /run/tuner/<name>.lock        flock held for the life of the steering (one owner per name)
    /run/tuner/<name>.json        what it attached, for `tuner cleanup` after a crash
    /sys/fs/bpf/tuner/<name>/     lease, ctl, tables: pinned so any process can audit them

A name becomes part of paths, so it is checked against :data:`NAME_RE` first.

>>> check_name("web-1")
'web-1'
>>> check_name("../x")
Traceback (most recent call last):
...
tuner.errors.TunerError: steering name '../x' is not allowed; fix: use 1 to 48 letters, \
digits, '.', '_' or '-', starting with a letter or digit
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import shutil
import struct
import time
from pathlib import Path
from typing import Any

from tuner import bpfsys, system
from tuner.errors import TunerError
from tuner.table import SLOTS

PIN_ROOT = "/sys/fs/bpf/tuner"
STATE_ROOT = "/run/tuner"  # bpffs holds only BPF objects: attachment notes for cleanup go here
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,47}")
NAME_RULE = "use 1 to 48 letters, digits, '.', '_' or '-', starting with a letter or digit"

#: map value layouts of bpf/steer.h, as read through the pins; checked against the compiled
#: program by :func:`check_layouts` when a steering loads
LEASE = struct.Struct("QQ")  # struct steer_lease: deadline_ns, deadline_jiffies
CTL = struct.Struct("II")  # struct steer_ctl: active, generation
TABLE = struct.Struct(f"{SLOTS}I")  # struct steer_table: target[STEER_SLOTS]
PINNED = {"lease": LEASE, "ctl": CTL, "tables": TABLE}


def check_name(name: str) -> str:
    """``name`` if it may name a steering (it becomes a file name), else a TunerError."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise TunerError(f"steering name {name!r} is not allowed", NAME_RULE)
    return name


def state_file(name: str) -> Path:
    """Where a steering actuator notes what it attached, for ``tuner cleanup``."""
    return Path(STATE_ROOT) / f"{name}.json"


def lock_file(name: str) -> Path:
    return Path(STATE_ROOT) / f"{name}.lock"


class NameLock:
    """An exclusive, non-blocking ``flock`` on ``/run/tuner/<name>.lock``: the one process
    that holds it owns the name's pins and note. The kernel drops it when the holder dies,
    so a crash never leaves the name taken.

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> with NameLock("doc", root) as a:
    ...     try:
    ...         NameLock("doc", root).acquire()
    ...     except TunerError as e:
    ...         print(e.problem.split(" (")[0])
    another tuner steers under the name 'doc'
    >>> NameLock("doc", root).held_by_other()
    False
    """

    def __init__(self, name: str, root: str = STATE_ROOT) -> None:
        self.name = name
        self.path = Path(root) / f"{name}.lock"
        self._fd = -1

    def acquire(self) -> NameLock:
        check_name(self.name)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise TunerError(
                    f"another tuner steers under the name {self.name!r} (pid {holder})",
                    "stop it, or give this one another name (agent.name)",
                ) from None
            # the file may have been removed by its last owner between our open and flock:
            # then the lock is on a file nobody else will see; start again on the new one
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and let go. Safe to call twice."""
        if self._fd >= 0:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = -1

    def held_by_other(self) -> bool:
        """True when a live process other than this object holds the lock."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def __enter__(self) -> NameLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


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


def check_layouts(bpf: Any, where: str) -> None:
    """The compiled program's lease, ctl and tables values must have the sizes that
    :data:`PINNED` reads (``bpf/steer.h`` and this module in step)."""
    for name, layout in PINNED.items():
        size = ctypes.sizeof(bpf[name.encode()].Leaf)
        if size != layout.size:
            raise TunerError(
                f"map {name} of {where} holds {size}-byte values; tuner/actuate/pins.py reads "
                f"{layout.size} (STEER_SLOTS in bpf/steer.h must be {SLOTS})",
                "keep bpf/steer.h and tuner/table.py in step",
            )


def read_pins(name: str) -> dict[str, Any]:
    """What the kernel holds for steering ``name``, read through its pins (from any process):
    ``generation`` (0: no table written), ``lease_left_ms`` (<= 0: lapsed, kernel default)
    and ``table``. For audits and tests."""
    pins = Path(PIN_ROOT) / check_name(name)
    fds = {}
    try:
        for m in PINNED:
            fds[m] = bpfsys.obj_get(str(pins / m))
    except OSError:
        for fd in fds.values():
            os.close(fd)
        raise TunerError(f"no steering named {name!r} is pinned", "is the agent running?") from None
    try:
        zero = struct.pack("I", 0)
        deadline, _ = LEASE.unpack(bpfsys.map_lookup(fds["lease"], zero, LEASE.size))
        active, generation = CTL.unpack(bpfsys.map_lookup(fds["ctl"], zero, CTL.size))
        key = struct.pack("I", active & 1)
        table = TABLE.unpack(bpfsys.map_lookup(fds["tables"], key, TABLE.size))
    finally:
        for fd in fds.values():
            os.close(fd)
    return {
        "generation": generation,
        "lease_left_ms": (deadline - time.monotonic_ns()) / 1e6,
        "table": list(table),
    }


def remove_pins(pins: Path) -> None:
    """Remove a steering pin folder and its state file (unpinning frees unused maps)."""
    if pins.exists():
        shutil.rmtree(pins, ignore_errors=True)
    state_file(pins.name).unlink(missing_ok=True)
