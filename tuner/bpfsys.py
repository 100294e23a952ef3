"""The few bpf(2) commands tuner issues directly, without BCC.

BCC compiles and loads programs; this module covers what BCC 0.26 does not wrap: creating a
map of a given type to check that the kernel supports it, and ``BPF_PROG_TEST_RUN``.

>>> from tuner.bpfsys import MapType, ProgType
>>> int(MapType.RINGBUF), int(ProgType.SK_REUSEPORT)
(27, 21)
"""

from __future__ import annotations

import ctypes
import enum
import functools
import os
import platform
import struct
from dataclasses import dataclass

_NR_BPF = {"x86_64": 321, "aarch64": 280}

# bpf(2) commands (include/uapi/linux/bpf.h)
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_TEST_RUN = 10

ATTR_SIZE = 128


class MapType(enum.IntEnum):
    """BPF map types tuner uses (``enum bpf_map_type``)."""

    HASH = 1
    ARRAY = 2
    PERCPU_ARRAY = 6
    LRU_HASH = 9
    DEVMAP = 14
    SOCKMAP = 15
    CPUMAP = 16
    SOCKHASH = 18
    RINGBUF = 27


class ProgType(enum.IntEnum):
    """BPF program types tuner uses (``enum bpf_prog_type``)."""

    TRACEPOINT = 5
    XDP = 6
    RAW_TRACEPOINT = 17
    SK_REUSEPORT = 21


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library, opened once (each window's kick goes through it)."""
    return ctypes.CDLL(None, use_errno=True)


def bpf(cmd: int, attr: bytearray) -> int:
    """Issue one bpf(2) command with ``attr`` (a mutable buffer) and return its result.

    Raises :class:`OSError` with the kernel's errno on failure.
    """
    return _call(cmd, (ctypes.c_char * len(attr)).from_buffer(attr))


@functools.cache
def _nr() -> int:
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise OSError(f"bpf(2) syscall number unknown for {platform.machine()}")
    return nr


def _call(cmd: int, buf: ctypes.Array) -> int:
    ret = _libc().syscall(_nr(), cmd, buf, len(buf))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def map_create(
    map_type: int, key_size: int, value_size: int, max_entries: int, flags: int = 0, name: str = ""
) -> int:
    """Create a map and return its file descriptor (the caller closes it).

    Example (needs root, so not run here)::

        fd = map_create(MapType.RINGBUF, 0, 0, 4096)
        os.close(fd)
    """
    attr = bytearray(ATTR_SIZE)
    struct.pack_into("IIIII", attr, 0, map_type, key_size, value_size, max_entries, flags)
    struct.pack_into("16s", attr, 28, name.encode()[:15])
    return bpf(BPF_MAP_CREATE, attr)


def map_update(map_fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
    """``bpf_map_update_elem`` on a map fd (for maps BCC did not create, e.g. a SOCKMAP whose
    values are socket fds)."""
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    attr = bytearray(ATTR_SIZE)
    struct.pack_into("IxxxxQQQ", attr, 0, map_fd, ctypes.addressof(k), ctypes.addressof(v), flags)
    bpf(BPF_MAP_UPDATE_ELEM, attr)


def map_lookup(map_fd: int, key: bytes, value_size: int) -> bytes:
    """``bpf_map_lookup_elem`` on a map fd: the value's bytes."""
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value_size)
    attr = bytearray(ATTR_SIZE)
    struct.pack_into("IxxxxQQ", attr, 0, map_fd, ctypes.addressof(k), ctypes.addressof(v))
    bpf(BPF_MAP_LOOKUP_ELEM, attr)
    return v.raw


def map_delete(map_fd: int, key: bytes) -> None:
    """``bpf_map_delete_elem`` on a map fd."""
    k = ctypes.create_string_buffer(key, len(key))
    attr = bytearray(ATTR_SIZE)
    struct.pack_into("IxxxxQ", attr, 0, map_fd, ctypes.addressof(k))
    bpf(BPF_MAP_DELETE_ELEM, attr)


def obj_pin(fd: int, path: str) -> None:
    """Pin a map or program in bpffs at ``path`` (it then outlives this process)."""
    p = ctypes.create_string_buffer(path.encode())
    attr = bytearray(ATTR_SIZE)
    struct.pack_into("QI", attr, 0, ctypes.addressof(p), fd)
    bpf(BPF_OBJ_PIN, attr)


def obj_get(path: str) -> int:
    """Open a pinned map or program and return a new fd."""
    p = ctypes.create_string_buffer(path.encode())
    attr = bytearray(ATTR_SIZE)
    struct.pack_into("QI", attr, 0, ctypes.addressof(p), 0)
    return bpf(BPF_OBJ_GET, attr)


@dataclass(frozen=True)
class TestRun:
    """Result of :func:`prog_test_run`: the program's return value and mean ns per run."""

    retval: int
    duration_ns: int
    data_out: bytes


def prog_test_run(
    prog_fd: int, data: bytes = b"", repeat: int = 1, out_size: int = 0, ctx: bytes = b""
) -> TestRun:
    """Run a loaded program in the kernel (``BPF_PROG_TEST_RUN``).

    Packet programs (XDP) take ``data``: ``duration_ns`` is the kernel's mean time per run over
    ``repeat`` runs, and with ``out_size`` the packet as the program left it is returned in
    ``data_out``. Raw tracepoint programs take ``ctx`` (their u64 arguments) and no data; they
    run once.
    """
    return PreparedRun(prog_fd, data, repeat, out_size, ctx)()


class PreparedRun:
    """:func:`prog_test_run`'s arguments laid out once, for a program run again and again
    (a probe's window kick, every window): each call then costs the system call alone."""

    def __init__(
        self, prog_fd: int, data: bytes = b"", repeat: int = 1, out_size: int = 0, ctx: bytes = b""
    ) -> None:
        self._data = ctypes.create_string_buffer(data, len(data)) if data else None
        self._ctx = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
        self._out = ctypes.create_string_buffer(out_size) if out_size else None
        attr = bytearray(ATTR_SIZE)

        def addr(buf: ctypes.Array | None) -> int:
            return ctypes.addressof(buf) if buf is not None else 0

        struct.pack_into("IIII", attr, 0, prog_fd, 0, len(data), out_size)
        struct.pack_into("QQ", attr, 16, addr(self._data), addr(self._out))
        struct.pack_into("I", attr, 32, max(1, repeat) if data else 0)
        struct.pack_into("II", attr, 40, len(ctx), 0)
        struct.pack_into("Q", attr, 48, addr(self._ctx))
        self._attr = attr
        self._buf = (ctypes.c_char * len(attr)).from_buffer(attr)

    def __call__(self) -> TestRun:
        _call(BPF_PROG_TEST_RUN, self._buf)
        retval, _, size_out = struct.unpack_from("III", self._attr, 4)
        (duration,) = struct.unpack_from("I", self._attr, 36)
        out = self._out.raw[:size_out] if self._out is not None else b""
        return TestRun(retval, duration, out)
