"""Facts about the running system: privileges, kernel version, mounted file systems.

Everything here reads ``/proc`` or ``os`` and changes nothing.

>>> from tuner.system import parse_kernel_version
>>> parse_kernel_version("6.18.44-fc-v595")
(6, 18, 44)
>>> parse_kernel_version("5.10.0")
(5, 10, 0)
"""

from __future__ import annotations

import os
import re
import socket
import stat

from tuner.errors import TunerError

#: Capability bits (linux/capability.h) the tuner needs, by name.
CAPABILITIES: dict[str, int] = {
    "CAP_NET_ADMIN": 12,
    "CAP_SYS_ADMIN": 21,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
}


def exited(pids: list[int]) -> list[int]:
    """The processes of ``pids`` that no longer exist.

    >>> exited([os.getpid()])
    []
    """
    return [p for p in pids if not os.path.exists(f"/proc/{p}")]


def parse_kernel_version(release: str) -> tuple[int, int, int]:
    """Return ``(major, minor, patch)`` from a kernel release string such as ``uname -r``.

    >>> parse_kernel_version("6.1")
    (6, 1, 0)
    """
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if not m:
        raise ValueError(f"not a kernel release: {release!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def kernel_release() -> str:
    """Return the running kernel's release (``uname -r``).

    >>> isinstance(kernel_release(), str)
    True
    """
    return os.uname().release


def effective_capabilities(status_path: str = "/proc/self/status") -> int:
    """Return this process's effective capability mask (``CapEff`` in ``/proc/self/status``).

    >>> effective_capabilities() >= 0
    True
    """
    with open(status_path) as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def missing_capabilities(mask: int | None = None) -> list[str]:
    """Return the names of the capabilities in :data:`CAPABILITIES` that ``mask`` lacks.

    >>> missing_capabilities(0)
    ['CAP_NET_ADMIN', 'CAP_SYS_ADMIN', 'CAP_PERFMON', 'CAP_BPF']
    >>> missing_capabilities((1 << 40) - 1)
    []
    """
    if mask is None:
        mask = effective_capabilities()
    return [name for name, bit in CAPABILITIES.items() if not mask >> bit & 1]


def mount_type(path: str, mounts_path: str = "/proc/self/mounts") -> str | None:
    """Return the file-system type mounted exactly at ``path``, or None when nothing is.

    When several are stacked on one path the last (visible) one wins.

    >>> mount_type("/proc")
    'proc'
    >>> mount_type("/no/such/dir") is None
    True
    """
    path = os.path.realpath(path)
    found = None
    with open(mounts_path) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and fields[1] == path:
                found = fields[2]
    return found


def context_switches(stat_path: str = "/proc/stat") -> int:
    """The kernel's count of context switches since boot (``ctxt`` in ``/proc/stat``).

    >>> context_switches() > 0
    True
    """
    with open(stat_path) as f:
        for line in f:
            if line.startswith("ctxt "):
                return int(line.split()[1])
    raise TunerError(f"{stat_path} has no ctxt line", "mount procfs on /proc")


def require_root(what: str) -> None:
    """Raise a one-line error when not running as root.

    >>> import os
    >>> require_root("x") if os.geteuid() == 0 else None
    """
    if os.geteuid() != 0:
        raise TunerError(f"{what} needs root", "run it as root (sudo)")


def stale_socket(path: str) -> bool:
    """True when ``path`` is a Unix socket that nothing listens on (left by a process that
    died), so that it may be removed.

    >>> stale_socket("/nonexistent.sock")
    False
    """
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return True
    except OSError:
        return False  # a live listener that is slow or full: not ours to remove
    finally:
        s.close()
    return False
