"""The part every probe shares: compile its BPF program, check the record layout, fill the
filter maps, read summary records from the ring buffer, read the kernel-side counters.

A probe subclass names its BPF source (``bpf/<name>.c``), its record type (a ctypes structure
that mirrors the C struct in ``bpf/<name>.h``) and how a record turns into a :class:`Frame`.
"""

from __future__ import annotations

import ctypes
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tuner import bcc_runtime, bpfsys
from tuner.errors import TunerError
from tuner.jiffies import tick_ns
from tuner.probes.config import ProbeConfig


# not frozen: one is made per entity per window, and a frozen dataclass's __init__ (an
# object.__setattr__ per field) costs five times a plain one's; nothing changes it after
@dataclass(slots=True)
class Frame:
    """One entity's features for one window, as the learner sees them.

    ``entity`` is ``"<kind>:<id>"`` (``task:1234``, ``cpu:0``, ``proc:99``, ``sock:...``).
    """

    probe: str
    entity: str
    window_start: int  # ns, CLOCK_MONOTONIC
    window_end: int
    features: dict[str, float]
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeStats:
    """Kernel-side counters of one probe since it was loaded."""

    events: int  # raw events seen by the BPF programs
    records: int  # summary records submitted to the ring buffer
    lost: int  # records dropped because the ring buffer was full
    overflow: int  # entities not observed because all slots were taken
    windows: int  # windows closed


class Probe:
    """Base class: load with :meth:`open`, read with :meth:`poll`, detach with :meth:`close`.

    Subclasses set ``name`` (the stem of ``bpf/<name>.c``), ``record_type`` and implement
    :meth:`to_frame`. Use as a context manager so that a failure detaches everything.
    """

    name: ClassVar[str]
    record_type: ClassVar[type[ctypes.Structure]]
    #: maps that cache per-task filter decisions; cleared once the filters are filled, since
    #: BCC attaches the programs (and they start deciding) before the filter maps can be set
    #: (decisions kept in task-local storage are redone through the filter's generation)
    decision_maps: ClassVar[tuple[str, ...]] = ()
    #: constants shared with ``bpf/<name>.h``, checked against it at load
    constants: ClassVar[dict[str, int]] = {}

    def __init__(self, config: ProbeConfig | None = None) -> None:
        self.config = config if config is not None else ProbeConfig()
        self._bpf: Any = None
        self._pending: list[Frame] = []
        self._interrupted: KeyboardInterrupt | None = None  # see _on_record

    # -- lifecycle ------------------------------------------------------------------------
    def source(self) -> str:
        """The C text that :meth:`open` compiles (what ``--ebpf`` prints): the shared
        ``bpf/probe_common.c`` followed by ``bpf/<name>.c``."""
        d = bcc_runtime.bpf_dir()
        return (
            (d / "probe_common.c").read_text()
            + f'\n#line 1 "{self.name}.c"\n'
            + (d / f"{self.name}.c").read_text()
        )

    def open(self) -> Probe:
        """Compile, check the layout, fill the filters; the tracepoints attach on load."""
        cfg = self.config.validate()
        bcc_runtime.check_constants(f"{self.name}.h", self.constants)
        bcc_runtime.require_tracefs()
        self._bpf = bcc_runtime.compile_program(
            text=self.source(),
            cflags=cfg.cflags() + self.kernel_defines(),
            where=f"bpf/{self.name}.c",
        )
        try:
            self._check_layout()
            self._fill_filters(cfg)
            self.setup(self._bpf)
            kick = bcc_runtime.load_function(
                self._bpf, "tuner_kick", bpfsys.ProgType.RAW_TRACEPOINT
            )
            self._kick = bpfsys.PreparedRun(kick.fd, ctx=bytes(16))  # run once a window
            self._bpf[b"records"].open_ring_buffer(self._on_record)
        except BaseException:
            self.close()
            raise
        return self

    def kernel_cflags(self) -> list[str]:
        """Hook for subclasses: -D defines that describe the running kernel (struct offsets
        from its BTF), checked before compiling."""
        return []

    def kernel_defines(self) -> list[str]:
        """Every -D define that describes the running kernel: the probe's own
        (:meth:`kernel_cflags`) and the tick length every probe's window test uses."""
        return [*self.kernel_cflags(), f"-DJIFFY_NS={tick_ns()}ULL"]

    def setup(self, bpf: Any) -> None:
        """Hook for subclasses: fill their own maps, attach extra programs."""

    def programs(self) -> dict[str, int]:
        """The attached programs by attach point, and their fds (none while closed)."""
        return bcc_runtime.attached_programs(self._bpf) if self._bpf is not None else {}

    def close(self) -> None:
        """Detach every program and free the maps. Safe to call twice."""
        if self._bpf is not None:
            bpf, self._bpf = self._bpf, None
            bpf.cleanup()

    def __enter__(self) -> Probe:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading --------------------------------------------------------------------------
    def poll(self) -> list[Frame]:
        """Close the window if it is due, then return the frames of the windows closed since
        the last call (does not block)."""
        if self._bpf is None:
            raise TunerError(f"probe {self.name} is not open")
        self._kick()
        self._bpf.ring_buffer_consume()
        self._raise_interrupt()
        frames, self._pending = self._pending, []
        return frames

    def watch_pids(self, pids: Iterable[int]) -> None:
        """Observe these processes too, from now on (a server's new workers). Their tasks
        may have been seen and left out already: the filter's generation goes up, and the
        probes decide again each task they left out under an older one."""
        if self._bpf is None:
            raise TunerError(f"probe {self.name} is not open")
        one = ctypes.c_uint8(1)
        for pid in pids:
            self._bpf[b"filter_pids"][ctypes.c_uint32(pid)] = one
        self._next_filter_gen()

    def _next_filter_gen(self) -> None:
        gen = self._bpf[b"filter_gen"]
        gen[ctypes.c_int(0)] = ctypes.c_uint32(gen[ctypes.c_int(0)].value + 1)

    def stats(self) -> ProbeStats:
        """Read the kernel-side counters."""
        c = self._bpf[b"control"][ctypes.c_int(0)]
        events = sum(self._bpf[b"events"][ctypes.c_int(0)])
        return ProbeStats(int(events), int(c.records), int(c.lost), int(c.overflow), int(c.flushes))

    def recycled(self) -> int:
        """Slots of ended entities (closed sockets, exited tasks) handed out again since load."""
        return int(self._bpf[b"recycled"][ctypes.c_int(0)].value)

    def to_frame(self, record: Any) -> Frame:
        raise NotImplementedError

    def decode(self, data: int, size: int) -> Frame | None:
        """A ring-buffer record (its address and size) as a :class:`Frame`, None when it is
        too short (see :meth:`frame_of`)."""
        n = ctypes.sizeof(self.record_type)
        return self.frame_of(ctypes.string_at(data, n)) if size >= n else None

    def frame_of(self, raw: bytes) -> Frame:
        """One record's bytes as a :class:`Frame`: by default through the ctypes mirror and
        :meth:`to_frame`; a probe whose records come every window for every entity reads
        the bytes with one :func:`struct_of` unpack instead (a ctypes attribute per field
        costs several times more)."""
        return self.to_frame(self.record_type.from_buffer_copy(raw))

    # -- internals ------------------------------------------------------------------------
    def _on_record(self, _ctx: Any, data: int, size: int) -> None:
        """BCC's ring-buffer callback, called through ctypes, which cannot pass an exception
        on: Ctrl-C or SIGTERM (a KeyboardInterrupt, see tuner.cli) landing here would be
        printed and dropped, and the agent would run on. It is kept for :meth:`poll` to raise
        once the ring buffer returns.

        >>> from tuner.probes.sched import SchedProbe
        >>> p = SchedProbe()
        >>> def interrupted(data, size):
        ...     raise KeyboardInterrupt
        >>> p.decode = interrupted
        >>> p._on_record(None, 0, 0)  # nothing escapes into ctypes
        >>> try:
        ...     p._raise_interrupt()  # what poll() does once the ring buffer returns
        ... except KeyboardInterrupt:
        ...     print("raised")
        raised
        """
        try:
            frame = self.decode(data, size)
            if frame is not None:
                self._pending.append(frame)
        except KeyboardInterrupt as e:
            self._interrupted = e

    def _raise_interrupt(self) -> None:
        """Raise the interrupt that arrived during a ring-buffer callback, if one did."""
        if self._interrupted is not None:
            e, self._interrupted = self._interrupted, None
            raise e

    def _check_layout(self) -> None:
        """The C struct (as BCC parsed it) and our ctypes mirror must agree field by field."""
        kernel = self._bpf[b"layout"].Leaf
        ours = self.record_type
        theirs = {f[0]: getattr(kernel, f[0]) for f in kernel._fields_}
        mismatch = [
            name
            for name, _ in ours._fields_
            if name not in theirs or theirs[name].offset != getattr(ours, name).offset
        ]
        if mismatch or ctypes.sizeof(kernel) != ctypes.sizeof(ours):
            raise TunerError(
                f"record layout of bpf/{self.name}.h and tuner/probes/{self.name}.py "
                f"differ (fields {mismatch or 'sizes'})",
                "keep the C struct and its ctypes mirror in step",
            )

    def _fill_filters(self, cfg: ProbeConfig) -> None:
        one = ctypes.c_uint8(1)
        for pid in cfg.pids:
            self._bpf[b"filter_pids"][ctypes.c_uint32(pid)] = one
        if cfg.cgroup is not None:
            self._bpf[b"filter_cgroups"][ctypes.c_uint64(cfg.cgroup_id())] = one
        for name in self.decision_maps:
            self._bpf[name.encode()].clear()
        self._next_filter_gen()


_CODES = {ctypes.c_uint8: "B", ctypes.c_uint16: "H", ctypes.c_uint32: "I", ctypes.c_int32: "i",
          ctypes.c_uint64: "Q", ctypes.c_int64: "q"}  # fmt: skip


def c_string(raw: bytes) -> str:
    """A C string field as unpacked by :func:`struct_of` (up to its first NUL).

    >>> c_string(b"nginx\\0\\0\\0")
    'nginx'
    """
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def struct_of(record: type[ctypes.Structure]) -> struct.Struct:
    """A :class:`struct.Struct` that unpacks the bytes of a ctypes record (integers, byte
    arrays, which unpack as ``bytes``, and nested records, flattened) into its fields in
    order, with the same offsets and size: refused otherwise, so the ctypes mirror stays the
    one definition.

    >>> class R(ctypes.Structure):
    ...     _fields_ = [("a", ctypes.c_uint32), ("name", ctypes.c_char * 4), ("b", ctypes.c_uint64)]
    >>> s = struct_of(R)
    >>> s.format, s.unpack(bytes(R(1, b"ab", 2)))
    ('=I4sQ', (1, b'ab\\x00\\x00', 2))
    >>> class Outer(ctypes.Structure):
    ...     _fields_ = [("t", ctypes.c_uint16), ("r", R), ("ip", ctypes.c_uint8 * 4)]
    >>> struct_of(Outer).format
    '=H6xI4sQ4s4x'
    """
    fmt, at = _format(record, 0, 0)
    fmt = "=" + fmt + (f"{ctypes.sizeof(record) - at}x" if ctypes.sizeof(record) > at else "")
    out = struct.Struct(fmt)
    if out.size != ctypes.sizeof(record):
        raise TunerError(f"{record.__name__}: struct size {out.size} is not "
                         f"{ctypes.sizeof(record)}", "check its fields")  # fmt: skip
    return out


def _format(record: type[ctypes.Structure], base: int, at: int) -> tuple[str, int]:
    """The struct codes of ``record``'s fields placed at ``base``, from offset ``at`` on;
    and the offset after them."""
    fmt = ""
    for name, ctype in record._fields_:
        offset = base + getattr(record, name).offset
        if offset > at:
            fmt += f"{offset - at}x"
        if issubclass(ctype, ctypes.Structure):
            code, at = _format(ctype, offset, offset)
            fmt += code
            continue
        if issubclass(ctype, ctypes.Array) and ctype._type_ in (ctypes.c_char, ctypes.c_uint8):
            code = f"{ctype._length_}s"
        elif ctype in _CODES:
            code = _CODES[ctype]
        else:
            raise TunerError(f"{record.__name__}.{name}: {ctype.__name__} has no struct code",
                             "decode this record through its ctypes mirror")  # fmt: skip
        fmt += code
        at = offset + ctypes.sizeof(ctype)
    return fmt, at


def wait_for_window(window_ms: int, grace_ms: float = 5.0) -> None:
    """Sleep until just after the next window boundary (windows are aligned to CLOCK_MONOTONIC)."""
    w = window_ms * 1_000_000
    now = time.monotonic_ns()
    time.sleep(((now // w + 1) * w - now) / 1e9 + grace_ms / 1000)
