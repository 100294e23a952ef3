"""Network probe (``bpf/net.c``): per socket of the observed processes, bytes and messages in
and out, TCP retransmits and state changes; per listening port, accepted connections and the
accept-queue backlog; per CPU, packets processed in softirq.

>>> ctypes.sizeof(NetRecord)
168
>>> format_addr(2, bytes([198, 18, 0, 1]) + bytes(12))
'198.18.0.1'
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket

from tuner.btf import Btf, check_raw_tracepoints, field_offset
from tuner.errors import TunerError
from tuner.probes.base import Frame, Probe, c_string, struct_of
from tuner.probes.config import ProbeConfig
from tuner.sockdiag import Listeners

KIND_SOCK, KIND_LISTEN, KIND_CPU = 1, 2, 3
COUNTERS = (
    "bytes_in",
    "bytes_out",
    "msgs_in",
    "msgs_out",
    "retransmits",
    "state_changes",
    "accepts",
    "rx_packets",
)
#: The raw tracepoints' arguments as bpf/net.c reads them (``ctx->args[i]``).
RAW_ARGS = {
    "sock_send_length": ["struct sock *", "int", "int"],
    "sock_recv_length": ["struct sock *", "int", "int"],
    "napi_poll": ["struct napi_struct *", "int", "int"],
}


#: The ``struct sock`` fields bpf/net.c reads, once per new socket, as paths through nested
#: structs (:func:`tuner.btf.field_offset`): family and protocol; and a TCP socket's addresses,
#: ports and state, so that a connection seen first at its I/O (one made before the probe was
#: loaded) has them too. Those of IPv6 are left out on a kernel without it.
FIELDS = {
    name: ("sock", "__sk_common", "sock_common", member)
    for name, member in (
        ("SK_FAMILY_OFF", "skc_family"),
        ("SK_DADDR_OFF", "skc_daddr"),
        ("SK_RCV_SADDR_OFF", "skc_rcv_saddr"),
        ("SK_DPORT_OFF", "skc_dport"),
        ("SK_NUM_OFF", "skc_num"),
        ("SK_STATE_OFF", "skc_state"),
        ("SK_V6_DADDR_OFF", "skc_v6_daddr"),
        ("SK_V6_RCV_SADDR_OFF", "skc_v6_rcv_saddr"),
    )
} | {"SK_PROTOCOL_OFF": ("sock", "sk_protocol")}
IPV6_FIELDS = ("SK_V6_DADDR_OFF", "SK_V6_RCV_SADDR_OFF")


def kernel_defines(btf: Btf) -> list[str]:
    """Check the raw tracepoints' prototypes against :data:`RAW_ARGS` and return the offsets of
    :data:`FIELDS` as ``-D`` flags, all from the running kernel's BTF.

    >>> kernel_defines(Btf.load())  # doctest: +ELLIPSIS
    ['-DSK_FAMILY_OFF=...', '-DSK_DADDR_OFF=...', ..., '-DSK_PROTOCOL_OFF=...']
    """
    check_raw_tracepoints(btf, RAW_ARGS, "bpf/net.c")
    out = []
    for name, path in FIELDS.items():
        try:
            out.append(f"-D{name}={field_offset(btf, path)}")
        except TunerError:
            if name not in IPV6_FIELDS:
                raise
    return out


class NetAcc(ctypes.Structure):
    """Mirror of ``struct net_acc`` in ``bpf/net.h``."""

    _fields_ = [
        ("kind", ctypes.c_uint32),
        ("tgid", ctypes.c_uint32),
        ("sk", ctypes.c_uint64),
        ("family", ctypes.c_uint16),
        ("protocol", ctypes.c_uint16),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("saddr", ctypes.c_uint8 * 16),
        ("daddr", ctypes.c_uint8 * 16),
        ("comm", ctypes.c_char * 16),
        ("state", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("idle", ctypes.c_uint32),
    ] + [(c, ctypes.c_uint64) for c in COUNTERS]


class NetRecord(ctypes.Structure):
    """Mirror of ``struct net_record`` in ``bpf/net.h``."""

    _fields_ = [("window_start", ctypes.c_uint64), ("window_end", ctypes.c_uint64), ("acc", NetAcc)]


RECORD = struct_of(NetRecord)  # the same layout, for struct.unpack
PROTOCOLS = {int(socket.IPPROTO_TCP): "tcp", int(socket.IPPROTO_UDP): "udp"}


def format_addr(family: int, raw: bytes) -> str:
    """Text form of an address as the probe stores it (IPv4 in the first 4 bytes)."""
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == socket.AF_INET6:
        return str(ipaddress.IPv6Address(raw[:16]))
    return ""


class Backlogs:
    """Connections waiting in the accept queues of TCP listeners on a port, as seen from the
    network namespace of a process: one sock_diag socket per process asked about, kept open.

    >>> import os
    >>> b = Backlogs(); b.of(os.getpid(), 1), b.of(2**22 + 7, 1)
    (None, None)
    >>> b.close()
    """

    def __init__(self) -> None:
        self._diag: dict[int, Listeners] = {}

    def of(self, tgid: int, port: int) -> int | None:
        """The sum of the accept queues on ``port`` (None: no listener, or ``tgid`` gone)."""
        try:
            if tgid not in self._diag:
                self._diag[tgid] = Listeners(tgid)
            rows = self._diag[tgid].query("tcp", port)
        except (TunerError, OSError):
            self._diag.pop(tgid, None)
            return None
        return sum(r.backlog for r in rows) if rows else None

    def close(self) -> None:
        for d in self._diag.values():
            d.close()
        self._diag.clear()


class NetProbe(Probe):
    """Raw tracepoints ``sock_send_length``, ``sock_recv_length``, ``napi_poll``; tracepoints
    ``sock:inet_sock_set_state``, ``tcp:tcp_retransmit_skb``.
    Entities ``sock:<tgid>:<lport>-<raddr>:<rport>#<n>``, ``listen:<port>``, ``cpu:<n>``."""

    name = "net"
    constants = {
        "NET_KIND_SOCK": KIND_SOCK,
        "NET_KIND_LISTEN": KIND_LISTEN,
        "NET_KIND_CPU": KIND_CPU,
    }
    record_type = NetRecord
    decision_maps = ("socks", "skipped")

    def __init__(self, config: ProbeConfig | None = None) -> None:
        super().__init__(config)
        self.backlogs = Backlogs()

    def close(self) -> None:
        super().close()
        self.backlogs.close()

    def kernel_cflags(self) -> list[str]:
        return kernel_defines(Btf.load())

    def frame_of(self, raw: bytes) -> Frame:
        """The frame of one record's bytes (``struct net_record``): one per active socket
        per window, so read with one unpack (about 20 us a socket record here, against 35
        through the ctypes mirror).

        >>> r = NetRecord(0, 100)
        >>> r.acc.kind, r.acc.tgid, r.acc.family, r.acc.protocol = KIND_SOCK, 7, 2, 6
        >>> r.acc.sport, r.acc.dport, r.acc.comm, r.acc.state = 80, 4000, b"nginx", 1
        >>> r.acc.daddr[:4] = [198, 18, 0, 9]
        >>> r.acc.bytes_in, r.acc.id = 512, 42
        >>> f = NetProbe.__new__(NetProbe).frame_of(bytes(r))
        >>> f.entity, f.labels["raddr"], f.labels["proto"], f.features["bytes_in"]
        ('sock:7:80-198.18.0.9:4000#2a', '198.18.0.9', 'tcp', 512.0)
        """
        (start, end, kind, tgid, sk, family, protocol, sport, dport, saddr, daddr, comm, state,
         id_, tid, _idle, *counts) = RECORD.unpack_from(raw)  # fmt: skip
        f = dict(zip(COUNTERS, map(float, counts), strict=True))
        labels: dict[str, str] = {}
        if kind == KIND_CPU:
            entity = f"cpu:{id_}"
            f = {"rx_packets": f["rx_packets"]}
        elif kind == KIND_LISTEN:
            entity = f"listen:{sport}"
            labels = {"tgid": str(tgid), "comm": c_string(comm)}
            backlog = self.backlogs.of(tgid, sport)
            f = {"accepts": f["accepts"], "accept_backlog": float(backlog or 0)}
        else:
            proto = PROTOCOLS.get(protocol, "?")
            raddr = format_addr(family, daddr)
            entity = f"sock:{tgid}:{sport}-{raddr}:{dport}#{id_:x}"
            labels = {
                "tgid": str(tgid),
                "tid": str(tid),
                "comm": c_string(comm),
                "proto": proto,
                "laddr": format_addr(family, saddr),
                "raddr": raddr,
                "state": str(state),
            }
            f.pop("accepts")
            f.pop("rx_packets")
        return Frame(self.name, entity, start, end, f, labels)
