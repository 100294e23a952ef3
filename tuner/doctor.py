"""``tuner doctor``: check every requirement of the tuner by trying it, and say how to fix gaps.

Each row of the report is one :class:`Check`. Program types are checked by compiling one tiny
BPF program with BCC and loading each of its functions as the type the tuner uses; map types
by creating one map of each type with bpf(2); network namespaces by making one (with a veth
pair in it) in a child process that exits, so nothing stays behind.

>>> from tuner.doctor import Check, Report
>>> r = Report([Check("root", True, "uid 0"), Check("btf", False, "absent", "x", required=False)])
>>> r.ok
True
>>> r.to_json()["checks"][1]["fix"]
'x'
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuner import bcc_runtime, bpfsys, system
from tuner.bcc_runtime import SETUP_FIX
from tuner.bpfsys import MapType, ProgType
from tuner.errors import TunerError

MIN_KERNEL = (5, 8, 0)  # ring buffers, sk_reuseport selecting from a SOCKMAP
ROOT_FIX = "run as root (sudo tuner doctor)"


@dataclass
class Check:
    """One row of the report: a requirement, whether it holds, and how to fix it if not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


@dataclass
class Report:
    """All checks; ``ok`` when every required one passed."""

    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok or not c.required for c in self.checks)

    def to_json(self) -> dict:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}

    def render(self, width: int = 80) -> str:
        """Return the report as a text table no wider than ``width`` columns.

        >>> print(Report([Check("root", False, "uid 1000", "run as root")]).render())
        FAIL  root                     uid 1000
              fix: run as root
        doctor: 1 of 1 required checks failed
        """
        lines = []
        for c in self.checks:
            status = "ok" if c.ok else ("FAIL" if c.required else "warn")
            lines.append(f"{status:<5} {c.name:<24} {c.detail}"[:width].rstrip())
            if not c.ok and c.fix:
                lines.append(f"      fix: {c.fix}"[:width])
        failed = sum(1 for c in self.checks if c.required and not c.ok)
        total = sum(1 for c in self.checks if c.required)
        lines.append(
            f"doctor: {failed} of {total} required checks failed"
            if failed
            else f"doctor: all {total} required checks passed"
        )
        return "\n".join(lines)


@dataclass(frozen=True)
class ProgramSpec:
    """A tiny BPF function loaded as ``prog_type`` to prove the kernel accepts that type."""

    name: str
    func: str
    prog_type: int
    source: str
    tracepoint: str = ""  # "category:event" to attach to, for TRACEPOINT
    raw_tracepoint: str = ""  # event to attach to, for RAW_TRACEPOINT
    test_packet: bool = False  # run it once with BPF_PROG_TEST_RUN on a dummy frame


PROGRAMS: tuple[ProgramSpec, ...] = (
    ProgramSpec(
        "program: tracepoint",
        "doctor_tp",
        ProgType.TRACEPOINT,
        "int doctor_tp(void *ctx) { return 0; }",
        tracepoint="sched:sched_switch",
    ),
    ProgramSpec(
        "program: raw_tracepoint",
        "doctor_rtp",
        ProgType.RAW_TRACEPOINT,
        "int doctor_rtp(struct bpf_raw_tracepoint_args *ctx) { return 0; }",
        raw_tracepoint="sched_switch",
    ),
    ProgramSpec(
        "program: xdp",
        "doctor_xdp",
        ProgType.XDP,
        "int doctor_xdp(struct xdp_md *ctx) { return XDP_PASS; }",
        test_packet=True,
    ),
    ProgramSpec(
        "program: sk_reuseport",
        "doctor_reuseport",
        ProgType.SK_REUSEPORT,
        "int doctor_reuseport(struct sk_reuseport_md *ctx) { return SK_PASS; }",
    ),
)

#: counts the sched_switch tracepoint's calls, beside the kernel's own count of switches
SWITCH_COUNTER = """
BPF_ARRAY(doctor_switches, u64, 1);
RAW_TRACEPOINT_PROBE(sched_switch)
{
    u32 k = 0;
    u64 *n = doctor_switches.lookup(&k);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}
"""
#: a shortfall of switches above this share fails the (informational) coverage row
SWITCH_SHORTFALL = 0.01

#: (row name, map type, key size, value size, max entries)
MAPS: tuple[tuple[str, MapType, int, int, int], ...] = (
    ("map: ringbuf", MapType.RINGBUF, 0, 0, 4096),
    ("map: sockmap", MapType.SOCKMAP, 4, 4, 8),
    ("map: sockhash", MapType.SOCKHASH, 4, 4, 8),
    ("map: devmap", MapType.DEVMAP, 4, 4, 8),
    ("map: cpumap", MapType.CPUMAP, 4, 4, max(1, os.cpu_count() or 1)),
    ("map: lru_hash", MapType.LRU_HASH, 8, 8, 64),
    ("map: percpu_array", MapType.PERCPU_ARRAY, 4, 8, 4),
)


def _fix_for_errno(err: int, default: str) -> str:
    return ROOT_FIX if err in (errno.EPERM, errno.EACCES) else default


@dataclass
class Doctor:
    """Runs the checks. Paths and the program list are parameters so tests can break them.

    Parameters
    ----------
    tracefs : str
        Where tracefs should be mounted.
    bpffs : str
        Where the BPF file system should be mounted (tuner pins under ``<bpffs>/tuner``).
    timer_list : str
        Where the kernel shows its jiffies (the steering lease is calibrated from it).
    programs : sequence of ProgramSpec, optional
        The program types to prove by loading (default :data:`PROGRAMS`).
    switch_sample_s : float
        How long to count context switches at the ``sched_switch`` tracepoint against the
        kernel's own count (the coverage row); 0 leaves the row out.
    """

    tracefs: str = "/sys/kernel/tracing"
    bpffs: str = "/sys/fs/bpf"
    timer_list: str = "/proc/timer_list"
    programs: Sequence[ProgramSpec] | None = None
    switch_sample_s: float = 1.0
    progress: Callable[[str], None] | None = field(default=None, repr=False)

    def run(self) -> Report:
        checks: list[Check] = []
        for step in (
            self._root,
            self._capabilities,
            self._kernel,
            self._btf,
            self._tracefs,
            self._bpffs,
            self._lease_clock,
        ):
            checks.append(step())
        checks.extend(self._bcc_and_programs())
        raw_tp = any(c.name == "program: raw_tracepoint" and c.ok for c in checks)
        if self.switch_sample_s > 0 and raw_tp:
            checks.append(self._switch_coverage())
        checks.extend(self._map(*spec) for spec in MAPS)
        checks.append(self._netns())
        return Report(checks)

    # -- privileges and kernel ------------------------------------------------------------
    def _root(self) -> Check:
        uid = os.geteuid()
        return Check("root", uid == 0, f"effective uid {uid}", ROOT_FIX)

    def _capabilities(self) -> Check:
        missing = system.missing_capabilities()
        detail = (
            "missing " + ", ".join(missing) if missing else "CAP_BPF PERFMON NET_ADMIN SYS_ADMIN"
        )
        return Check("capabilities", not missing, detail, ROOT_FIX)

    def _kernel(self) -> Check:
        rel = system.kernel_release()
        try:
            ok = system.parse_kernel_version(rel) >= MIN_KERNEL
        except ValueError:
            ok = False
        need = ".".join(map(str, MIN_KERNEL[:2]))
        return Check("kernel", ok, f"Linux {rel} (needs >= {need})", f"boot a kernel >= {need}")

    def _btf(self) -> Check:
        ok = os.path.exists("/sys/kernel/btf/vmlinux")
        return Check(
            "btf",
            ok,
            "/sys/kernel/btf/vmlinux " + ("present" if ok else "absent"),
            "a kernel built with CONFIG_DEBUG_INFO_BTF=y",
            required=False,
        )

    def _tracefs(self) -> Check:
        try:
            bcc_runtime.require_tracefs([self.tracefs])  # the check the probes make
        except TunerError as e:
            events = os.path.join(self.tracefs, "events", "sched", "sched_switch")
            return Check("tracefs", False, f"no {events}", e.fix)
        return Check("tracefs", True, f"{self.tracefs} ({system.mount_type(self.tracefs)})")

    def _bpffs(self) -> Check:
        from tuner.actuate.pins import require_bpffs

        try:
            require_bpffs(Path(self.bpffs))  # the check steering makes before it loads
        except TunerError as e:
            kind = system.mount_type(self.bpffs)
            return Check("bpffs", False, f"{self.bpffs} ({kind or 'not mounted'})", e.fix)
        return Check("bpffs", True, f"{self.bpffs} (bpf)")

    def _lease_clock(self) -> Check:
        from tuner.jiffies import read_clock

        try:
            clock = read_clock(timer_list=self.timer_list)
        except TunerError as e:
            return Check("lease clock", False, e.problem, e.fix or "mount procfs on /proc")
        return Check("lease clock", True, f"jiffies at HZ={clock.hz} from {self.timer_list}", "")

    # -- BCC and program types ------------------------------------------------------------
    def _bcc_and_programs(self) -> list[Check]:
        programs = PROGRAMS if self.programs is None else self.programs
        try:
            bcc = bcc_runtime.import_bcc()
        except TunerError as e:
            skipped = [
                Check(p.name, False, "skipped: BCC not importable", SETUP_FIX) for p in programs
            ]
            return [Check("bcc", False, e.problem, e.fix), *skipped]
        rows = [Check("bcc", True, f"bcc {getattr(bcc, '__version__', '?')} importable")]
        text = "\n".join(p.source for p in programs)
        try:
            bpf = bcc_runtime.compile_program(text=text)
        except TunerError as e:
            fix = (
                "apt-get install linux-headers-amd64 and link them under "
                f"/lib/modules/{system.kernel_release()}/build ({SETUP_FIX})"
            )
            rows.append(Check("bcc headers", False, e.problem, fix))
            rows.extend(Check(p.name, False, "skipped: BCC cannot compile", fix) for p in programs)
            return rows
        rows.append(Check("bcc headers", True, "compiled a test program"))
        try:
            rows.extend(self._program(bpf, p) for p in programs)
        finally:
            bpf.cleanup()
        return rows

    def _program(self, bpf, spec: ProgramSpec) -> Check:
        fix = (
            f"this kernel or user cannot load {spec.name.split(': ')[-1]} programs; "
            f"{ROOT_FIX} on a kernel >= {MIN_KERNEL[0]}.{MIN_KERNEL[1]}"
        )
        try:
            fn = bcc_runtime.load_function(bpf, spec.func, spec.prog_type)
            detail = "loaded"
            if spec.tracepoint:
                bpf.attach_tracepoint(tp=spec.tracepoint, fn_name=spec.func)
                bpf.detach_tracepoint(spec.tracepoint)
                detail = f"loaded, attached to {spec.tracepoint}"
            if spec.raw_tracepoint:
                bpf.attach_raw_tracepoint(tp=spec.raw_tracepoint, fn_name=spec.func)
                bpf.detach_raw_tracepoint(spec.raw_tracepoint)
                detail = f"loaded, attached to raw {spec.raw_tracepoint}"
            if spec.test_packet:
                run = bpfsys.prog_test_run(fn.fd, bytes(64))
                detail = f"loaded, test run returned {run.retval}"
        except TunerError as e:
            return Check(spec.name, False, e.problem, fix)
        except Exception as e:  # BCC attach errors are plain Exceptions
            return Check(spec.name, False, f"{type(e).__name__}: {e}", fix)
        return Check(spec.name, True, detail)

    def _switch_coverage(self) -> Check:
        """How many of the kernel's context switches reach the ``sched_switch`` tracepoint:
        the scheduler probe's CPU rows miss the runs of those that do not (per-task times
        are whole; docs/probes/sched.md). Informational: nothing the tuner can fix."""
        name = "sched_switch coverage"
        try:
            bpf = bcc_runtime.compile_program(text=SWITCH_COUNTER, where="the switch counter")
        except TunerError as e:
            return Check(name, False, e.problem, e.fix or SETUP_FIX, required=False)
        try:
            counter = bpf["doctor_switches"]
            kernel0, seen0 = system.context_switches(), counter[0].value
            time.sleep(self.switch_sample_s)
            seen1, kernel1 = counter[0].value, system.context_switches()
        except TunerError as e:  # no count of switches to compare with
            return Check(name, False, e.problem, e.fix, required=False)
        finally:
            bpf.cleanup()
        kernel, seen = kernel1 - kernel0, seen1 - seen0
        short = max(kernel - seen, 0)
        detail = (f"{seen} of the kernel's {kernel} context switches in "
                  f"{self.switch_sample_s:g} s reached the tracepoint")  # fmt: skip
        if short:
            detail += f"; {short} did not (their runs are missing from CPU rows)"
        ok = short <= SWITCH_SHORTFALL * max(kernel, 1)
        fix = (
            ""
            if ok
            else "none in the tuner: CPU loads read low by that share (see docs/probes/sched.md)"
        )
        return Check(name, ok, detail, fix, required=False)

    # -- maps and namespaces --------------------------------------------------------------
    def _map(self, name: str, map_type: MapType, key: int, value: int, entries: int) -> Check:
        try:
            fd = bpfsys.map_create(map_type, key, value, entries, name="tuner_doctor")
        except OSError as e:
            fix = _fix_for_errno(
                e.errno or 0,
                f"a kernel >= {MIN_KERNEL[0]}.{MIN_KERNEL[1]} with {map_type.name} maps",
            )
            return Check(name, False, f"map create failed: {e.strerror or e}", fix)
        os.close(fd)
        return Check(name, True, "created")

    def _netns(self) -> Check:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: new netns, veth pair inside it, then exit (the netns goes away)
            os.close(read)
            code, msg = 0, b"created a namespace with a veth pair"
            try:
                import ctypes

                if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
                from pyroute2 import IPRoute

                with IPRoute() as ipr:
                    ipr.link("add", ifname="tdoc0", kind="veth", peer="tdoc1")
            except Exception as e:
                code, msg = 1, f"{type(e).__name__}: {e}".encode()
            os.write(write, msg)
            os._exit(code)
        os.close(write)
        with os.fdopen(read, "rb") as f:
            msg = f.read().decode(errors="replace")
        _, status = os.waitpid(pid, 0)
        ok = os.waitstatus_to_exitcode(status) == 0
        return Check(
            "netns + veth",
            ok,
            msg or "child died",
            f"{ROOT_FIX}; the kernel needs CONFIG_NET_NS and CONFIG_VETH",
        )
