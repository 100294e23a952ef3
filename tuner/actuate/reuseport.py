"""Steer new connections among the sockets of a SO_REUSEPORT group (``bpf/steer_reuseport.c``).

The group is either sockets this process owns, or the listening sockets of an unmodified
running server, reached by PID and port: their file descriptors are duplicated into this
process with ``pidfd_getfd(2)`` (root), which gives the same sockets, not copies.

Target index ``i`` is the i-th socket: for owned sockets the order given, for a server the
order of (pid, fd number).
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tuner import bcc_runtime, bpfsys, procnet, sockdiag
from tuner.actuate.base import MAX_CLIENTS, MAX_TARGETS, BpfSteering
from tuner.actuate.steering import Placement
from tuner.bpfsys import MapType, ProgType
from tuner.errors import TunerError

SO_ATTACH_REUSEPORT_EBPF = 52
SO_DETACH_REUSEPORT_BPF = 68
_NR_PIDFD_OPEN, _NR_PIDFD_GETFD = 434, 438


def _syscall(nr: int, *args: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    ret = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def group_socket_fds(pid: int, port: int, protocol: str = "tcp") -> list[int]:
    """Numbers of the fds of process ``pid`` that are listening (TCP) or bound (UDP) sockets on
    ``port``, in fd order. Asks sock_diag in its namespace, reads ``/proc/<pid>/fd``."""
    if not os.path.exists(f"/proc/{pid}"):
        raise TunerError(f"process {pid} does not exist", "check the server's PID")
    inodes = {s.inode for s in sockdiag.listeners(protocol, port, pid)}
    return procnet.fds_of(pid, inodes) if inodes else []


def take_sockets(pid: int, port: int, protocol: str = "tcp") -> list[socket.socket]:
    """Duplicate the group's sockets of process ``pid`` into this process."""
    fds = group_socket_fds(pid, port, protocol)
    if not fds:
        raise TunerError(
            f"process {pid} has no {protocol} socket on port {port}",
            "check the port with `ss -lntp`",
        )
    return take_fds([(pid, fd) for fd in fds])


def take_fds(handles: Sequence[tuple[int, int]]) -> list[socket.socket]:
    """Duplicate file descriptor ``fd`` of process ``pid``, for each ``(pid, fd)``, into this
    process (``pidfd_getfd(2)``: the same sockets, not copies). All or none."""
    socks: list[socket.socket] = []
    pidfds: dict[int, int] = {}
    try:
        for pid, fd in handles:
            if pid not in pidfds:
                try:
                    pidfds[pid] = _syscall(_NR_PIDFD_OPEN, pid, 0)
                except OSError as e:
                    raise TunerError(
                        f"cannot open process {pid}: {e.strerror}",
                        "run as root, while the server runs",
                    ) from None
            try:
                socks.append(socket.socket(fileno=_syscall(_NR_PIDFD_GETFD, pidfds[pid], fd, 0)))
            except OSError as e:
                raise TunerError(
                    f"cannot take socket fd {fd} of process {pid}: {e.strerror}",
                    "run as root (pidfd_getfd needs CAP_SYS_PTRACE over the target)",
                ) from None
    except BaseException:
        for s in socks:
            s.close()
        raise
    finally:
        for pidfd in pidfds.values():
            os.close(pidfd)
    return socks


@dataclass
class ReuseportSteering(BpfSteering):
    """Steer a SO_REUSEPORT group with an indirection table and a lease.

    Give ``sockets`` (owned by this process), ``handles`` (``(pid, fd)`` of each socket of an
    unmodified server, in target order, as :func:`tuner.group.discover` finds them), or
    ``pids`` and ``port`` (every listed process's sockets on that port, in order).
    See :class:`~tuner.actuate.base.BpfSteering` for mode, lease and shares.

    ``count_flows`` (default: when the group is UDP) counts datagrams per flow hash in the
    kernel (:meth:`flow_hits`), and :meth:`set_overrides` pins flows to sockets.
    :meth:`set_clients` sends the new connections of given IPv4 client addresses to given
    sockets, under the lease like the table.
    """

    sockets: Sequence[socket.socket] = ()
    pids: Sequence[int] = ()
    handles: Sequence[tuple[int, int]] = ()
    port: int | None = None
    protocol: str = "tcp"
    count_flows: bool | None = None
    #: the latest override sets asked for, written or not (shadow), as (time, mode, overrides)
    override_log: deque = field(default_factory=lambda: deque(maxlen=1000), init=False)
    _overrides: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    _clients: dict[int, int] = field(default_factory=dict, init=False, repr=False)  # by key
    _socks: list[socket.socket] = field(default_factory=list, init=False, repr=False)
    _taken: bool = field(default=False, init=False, repr=False)
    _sockmap: int = field(default=-1, init=False, repr=False)
    _prog_fd: int = field(default=-1, init=False, repr=False)

    def targets(self) -> int:
        return len(self._socks)

    def _load(self) -> None:
        if self.protocol not in procnet.STATES:
            raise TunerError(f"protocol must be tcp or udp; got {self.protocol!r}")
        if self.handles:
            self._taken = True
            self._socks = take_fds(self.handles)
        elif self.pids:
            if self.port is None:
                raise TunerError("steering a server by PID needs its port")
            self._taken = True
            for pid in self.pids:
                self._socks += take_sockets(pid, self.port, self.protocol)
        else:
            self._socks = list(self.sockets)
        if not 1 <= len(self._socks) <= MAX_TARGETS:
            raise TunerError(
                f"a reuseport group of {len(self._socks)} sockets; 1 to {MAX_TARGETS} are supported"
            )
        self._sockmap = bpfsys.map_create(MapType.SOCKMAP, 4, 4, MAX_TARGETS, name="tuner_group")
        for i, s in enumerate(self._socks):
            try:
                bpfsys.map_update(self._sockmap, struct.pack("I", i), struct.pack("I", s.fileno()))
            except OSError as e:
                raise TunerError(
                    f"socket {i} of the group cannot join a SOCKMAP: {e.strerror}",
                    "steer listening TCP or bound UDP sockets",
                ) from None
        if self.count_flows is None:
            self.count_flows = self._socks[0].type == socket.SOCK_DGRAM
        self._bpf = bcc_runtime.compile_program(
            src_file=bcc_runtime.bpf_dir() / "steer_reuseport.c",
            cflags=[f"-DSOCKMAP_FD={self._sockmap}", f"-DMAX_TARGETS={MAX_TARGETS}"]
            + (["-DCOUNT_FLOWS=1"] if self.count_flows else []),
        )
        fn = bcc_runtime.load_function(self._bpf, "steer_reuseport", ProgType.SK_REUSEPORT)
        self._prog_fd = fn.fd
        try:
            self._socks[0].setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, fn.fd)
        except OSError as e:
            raise TunerError(
                f"cannot attach to the reuseport group: {e.strerror}",
                "the sockets must have SO_REUSEPORT set",
            ) from None

    def _detach(self) -> None:
        try:
            if self._socks:
                try:
                    self._socks[0].setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)
                except OSError:
                    pass  # group already gone
        finally:
            if self._taken:
                for s in self._socks:
                    s.close()  # our duplicates only: the server keeps its sockets
            self._socks = []
            if self._sockmap >= 0:
                os.close(self._sockmap)
                self._sockmap = -1

    def retarget(self, handles: Sequence[tuple[int, int]]) -> None:
        """Steer another set of the server's sockets, target ``i`` the ``i``-th handle (a
        thread pool that grew, a worker respawned with a socket of its own). The lease is
        ended first, so no connection follows a table meant for the old set; the SOCKMAP is
        rewritten in place and the program attached again through the new first socket."""
        if not self._taken or self._bpf is None:
            raise TunerError("only an open steering of a server's group can be retargeted")
        if not 1 <= len(handles) <= MAX_TARGETS:
            raise TunerError(f"a reuseport group of {len(handles)} sockets is not supported")
        new = take_fds(handles)
        self.expire()
        try:
            for i, sock in enumerate(new):
                bpfsys.map_update(
                    self._sockmap, struct.pack("I", i), struct.pack("I", sock.fileno())
                )
            for i in range(len(new), len(self._socks)):
                bpfsys.map_delete(self._sockmap, struct.pack("I", i))
            new[0].setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, self._prog_fd)
        except OSError as e:
            for sock in new:
                sock.close()
            raise TunerError(f"cannot steer the group's new sockets: {e.strerror}") from None
        old, self._socks, self.handles = self._socks, new, list(handles)
        for sock in old:
            sock.close()
        self.note_state()

    def _state(self) -> dict:
        return {
            "pids": sorted({p for p, _ in self.handles}) or list(self.pids) or [os.getpid()],
            "port": self.port or (self._socks[0].getsockname()[1] if self._socks else None),
            "protocol": self.protocol,
        }

    def counters(self) -> dict[str, Any]:
        """Selections per socket and fallbacks to the kernel default, since load."""
        sel = self._bpf[b"selected"]
        per_socket = [int(sum(sel[sel.Key(i)])) for i in range(len(self._socks))]
        fb = self._bpf[b"fallbacks"]
        hits = self._bpf[b"client_hits"]
        return {
            "selected": per_socket,
            "fallback_lease": int(sum(fb[fb.Key(0)])),
            "fallback_select": int(sum(fb[fb.Key(1)])),
            "client_hits": int(sum(hits[hits.Key(0)])),
        }

    def _placement(self) -> Placement:
        """New connections (UDP: datagrams) the table placed per socket, and those the
        kernel's hash placed: no lease in force, or the chosen socket gone."""
        c = self.counters()
        return Placement(
            tuple(c["selected"]),
            {"no_lease": c["fallback_lease"], "socket_gone": c["fallback_select"]},
        )

    @property
    def counts_flows(self) -> bool:
        """True for a UDP group (unless ``count_flows=False``), once loaded."""
        return bool(self.count_flows)

    def flow_hits(self) -> dict[int, int]:
        """Datagrams per flow hash since the last call (read and cleared in one batch).
        Empty unless ``count_flows``."""
        if not self.count_flows or self._bpf is None:
            return {}
        hits = self._bpf[b"flow_hits"]
        try:
            return {_int(k): _int(v) for k, v in hits.items_lookup_and_delete_batch()}
        except Exception:  # an empty map: some BCC versions raise on ENOENT from the batch
            return {}

    def set_overrides(self, overrides: Mapping[int, int]) -> bool:
        """Pin flow hashes to target indices; flows not named lose their pin. Active mode:
        written to the kernel (only what changed); shadow: recorded only. True if written."""
        for h, t in overrides.items():
            if not 0 <= t < self.targets():
                raise TunerError(f"override names target {t}, not in the group of {self.targets()}")
            if not 0 <= h < 2**32:
                raise TunerError(f"override flow hash {h} is not a u32")
        self.override_log.append((time.time(), self.mode, dict(overrides)))
        if self.mode != "active" or self._bpf is None:
            return False
        self._overrides = self._sync(b"overrides", self._overrides, overrides)
        return True

    @property
    def places_clients(self) -> bool:
        return True

    def set_clients(self, clients: Mapping[str, int]) -> bool:
        """Send new connections from each IPv4 address of ``clients`` to its target index;
        addresses not named lose their place. Active mode: written (only what changed);
        shadow: nothing. True if written."""
        if len(clients) > MAX_CLIENTS:
            raise TunerError(f"{len(clients)} clients to place; at most {MAX_CLIENTS}")
        wanted = {}
        for addr, t in clients.items():
            if not 0 <= t < self.targets():
                raise TunerError(f"client {addr} sent to target {t}, not in the group of "
                                 f"{self.targets()}")  # fmt: skip
            wanted[_addr_key(addr)] = t
        if self.mode != "active" or self._bpf is None:
            return False
        self._clients = self._sync(b"clients", self._clients, wanted)
        return True

    def _sync(self, name: bytes, held: dict[int, int], wanted: Mapping[int, int]) -> dict[int, int]:
        """Make the kernel map ``name`` (key -> target), which holds ``held``, hold ``wanted``:
        keys not wanted deleted, changed ones written, the rest left; returns what it holds."""
        m = self._bpf[name]
        for k in held.keys() - wanted.keys():
            try:
                del m[m.Key(k)]
            except KeyError:
                pass
        for k, t in wanted.items():
            if held.get(k) != t:
                m[m.Key(k)] = m.Leaf(t)
        return dict(wanted)

    def placed_clients(self) -> dict[str, int]:
        """The client placements the kernel holds (address -> target)."""
        m = self._bpf[b"clients"]
        return {socket.inet_ntoa(struct.pack("I", _int(k))): _int(v) for k, v in m.items()}

    def overrides(self) -> dict[int, int]:
        """The overrides the kernel holds."""
        m = self._bpf[b"overrides"]
        return {_int(k): _int(v) for k, v in m.items()}


def _addr_key(addr: str) -> int:
    """An IPv4 address as the clients map's key: its header bytes read as a host u32.

    >>> _addr_key("1.0.0.0")
    1
    """
    try:
        return struct.unpack("I", socket.inet_aton(addr))[0]
    except OSError:
        raise TunerError(f"client address {addr!r} is not IPv4",
                         "only IPv4 clients are placed") from None  # fmt: skip


def _int(x: Any) -> int:
    """A BCC key or value as an int (batch calls give ints, others ctypes)."""
    return int(getattr(x, "value", x))
