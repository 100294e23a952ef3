"""The running kernel's own type information (BTF, ``/sys/kernel/btf/vmlinux``), read directly.

BCC compiles against the Debian 6.1 headers, whose struct layouts need not match the running
kernel. Where a probe must read a kernel struct through a pointer (a raw tracepoint's
``struct task_struct *`` argument), it takes the field's offset from here, where the running
kernel describes itself, and gets it as a compile-time constant.

Only what the probes need is decoded: struct members and function prototypes.

>>> import struct
>>> strings = b"\\0s\\0x\\0"
>>> types = struct.pack("<3I", 1, (4 << 24) | 1, 8) + struct.pack("<3I", 3, 0, 32)
>>> hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
>>> btf = Btf(hdr + types + strings)
>>> btf.member_offset("s", "x")
4
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import TunerError

VMLINUX = Path("/sys/kernel/btf/vmlinux")

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_TYPEDEF, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_DECL_TAG, KIND_ENUM64 = (
    8,
    13,
    14,
    15,
    17,
    19,
)
#: Bytes that follow the 12-byte common part of a type: (fixed, per vlen item).
_TRAILER = {
    KIND_INT: (4, 0),
    KIND_ARRAY: (12, 0),
    KIND_STRUCT: (0, 12),
    KIND_UNION: (0, 12),
    KIND_ENUM: (0, 8),
    KIND_FUNC_PROTO: (0, 8),
    KIND_VAR: (4, 0),
    KIND_DATASEC: (0, 12),
    KIND_DECL_TAG: (4, 0),
    KIND_ENUM64: (0, 12),
}


@dataclass(frozen=True)
class Type:
    kind: int
    name: str
    ref: int  # size for STRUCT/UNION/INT/ENUM, else the referenced type id
    items: tuple[tuple[str, int, int], ...]  # members (name, type, bit offset); params (name, type)


class Btf:
    """A parsed BTF blob; :meth:`load` reads the running kernel's."""

    def __init__(self, blob: bytes) -> None:
        if len(blob) < 24:
            raise TunerError("kernel BTF is truncated", "check /sys/kernel/btf/vmlinux")
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            "<HBBIIIII", blob
        )
        if magic != 0xEB9F:
            raise TunerError("kernel BTF has a bad magic number", "check /sys/kernel/btf/vmlinux")
        self._types = blob[hdr_len + type_off : hdr_len + type_off + type_len]
        self._strs = blob[hdr_len + str_off : hdr_len + str_off + str_len]
        self._offsets: list[int] = [0]  # type id -> offset in _types (id 0 is void)
        pos, end = 0, len(self._types)
        while pos < end:
            self._offsets.append(pos)
            if pos + 12 > end:
                raise TunerError("kernel BTF is truncated", "check /sys/kernel/btf/vmlinux")
            info = struct.unpack_from("<I", self._types, pos + 4)[0]
            fixed, per = _TRAILER.get((info >> 24) & 0x1F, (0, 0))
            pos += 12 + fixed + per * (info & 0xFFFF)

    @classmethod
    def load(cls, path: Path = VMLINUX) -> Btf:
        try:
            return cls(path.read_bytes())
        except OSError as e:
            raise TunerError(
                f"cannot read kernel BTF {path}: {e.strerror}",
                "a kernel with CONFIG_DEBUG_INFO_BTF",
            ) from None

    def _str(self, off: int) -> str:
        return self._strs[off : self._strs.index(b"\0", off)].decode()

    def type(self, tid: int) -> Type:
        """The type with id ``tid``, its members or parameters decoded."""
        pos = self._offsets[tid]
        name_off, info, ref = struct.unpack_from("<3I", self._types, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        items: list[tuple[str, int, int]] = []
        if kind in (KIND_STRUCT, KIND_UNION):
            bitfields = info >> 31
            for i in range(vlen):
                m_name, m_type, m_off = struct.unpack_from("<3I", self._types, pos + 12 + 12 * i)
                items.append((self._str(m_name), m_type, m_off & 0xFFFFFF if bitfields else m_off))
        elif kind == KIND_FUNC_PROTO:
            for i in range(vlen):
                p_name, p_type = struct.unpack_from("<2I", self._types, pos + 12 + 8 * i)
                items.append((self._str(p_name), p_type, 0))
        return Type(kind, self._str(name_off), ref, tuple(items))

    def find(self, name: str, kind: int) -> int:
        """The id of the first type of ``kind`` called ``name``; TunerError when there is none."""
        want = name.encode() + b"\0"
        for tid in range(1, len(self._offsets)):
            name_off, info = struct.unpack_from("<2I", self._types, self._offsets[tid])
            if (info >> 24) & 0x1F == kind and self._strs.startswith(want, name_off):
                return tid
        raise TunerError(f"kernel BTF has no {name}", "a kernel built with this type")

    def member_offset(self, struct_name: str, member: str) -> int:
        """Byte offset of ``member`` in ``struct struct_name`` on this kernel, also when it is
        a member of an anonymous struct or union inside it (``sock_common``'s addresses).

        >>> btf = Btf.load()
        >>> btf.member_offset("sock_common", "skc_rcv_saddr") - btf.member_offset(
        ...     "sock_common", "skc_daddr")
        4
        """
        bits = self._member_bits(self.find(struct_name, KIND_STRUCT), member)
        if bits is None:
            raise TunerError(f"kernel BTF: struct {struct_name} has no member {member}")
        if bits % 8:
            raise TunerError(f"kernel BTF: {struct_name}.{member} is a bit field")
        return bits // 8

    def _member_bits(self, tid: int, member: str) -> int | None:
        for m_name, m_type, bits in self.type(tid).items:
            if m_name == member:
                return bits
            if not m_name and self.type(m_type).kind in (KIND_STRUCT, KIND_UNION):
                inner = self._member_bits(m_type, member)
                if inner is not None:
                    return bits + inner
        return None

    def describe(self, tid: int) -> str:
        """A short C-like spelling of a type: ``struct task_struct *``, ``bool``, ``void *``."""
        t = self.type(tid) if tid else Type(0, "void", 0, ())
        if t.kind == KIND_PTR:
            return self.describe(t.ref) + " *"
        if t.kind in (KIND_STRUCT, KIND_UNION):
            return ("struct " if t.kind == KIND_STRUCT else "union ") + t.name
        if t.kind in (KIND_TYPEDEF, KIND_INT, KIND_ENUM, KIND_ENUM64) or not t.kind:
            return t.name
        return self.describe(t.ref)  # const, volatile and other modifiers

    def raw_tracepoint_args(self, name: str) -> list[str]:
        """The C types of a raw tracepoint's arguments (``ctx->args[i]``), from its
        ``btf_trace_<name>`` prototype, without the leading ``void *__data``."""
        ptr = self.type(self.type(self.find(f"btf_trace_{name}", KIND_TYPEDEF)).ref)
        proto = self.type(ptr.ref)
        return [self.describe(p_type) for _n, p_type, _ in proto.items[1:]]


def field_offset(btf: Btf, path: tuple[str, ...]) -> int:
    """Byte offset of a field reached through nested structs: ``(struct, member, [member's
    struct, member, ...])``.

    >>> btf = Btf.load()
    >>> field_offset(btf, ("task_struct", "se", "sched_entity", "sum_exec_runtime")) == (
    ...     btf.member_offset("task_struct", "se")
    ...     + btf.member_offset("sched_entity", "sum_exec_runtime"))
    True
    """
    off = btf.member_offset(path[0], path[1])
    for i in range(2, len(path), 2):
        off += btf.member_offset(path[i], path[i + 1])
    return off


def check_raw_tracepoints(btf: Btf, wanted: dict[str, list[str]], reader: str) -> None:
    """Refuse, with a one-line error, a kernel whose raw tracepoints take other arguments than
    the ``wanted`` C types (by tracepoint name) that the BPF program ``reader`` reads.

    >>> check_raw_tracepoints(Btf.load(), {"napi_poll": ["struct napi_struct *", "int", "int"]},
    ...                       "bpf/net.c")
    """
    for name, want in wanted.items():
        have = btf.raw_tracepoint_args(name)
        if have != want:
            raise TunerError(
                f"this kernel's {name} tracepoint takes ({', '.join(have)}), "
                f"{reader} reads ({', '.join(want)})",
                f"update {reader} and its loader for this kernel",
            )
