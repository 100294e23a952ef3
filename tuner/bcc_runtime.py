"""How tuner uses BCC: import it, compile a BPF program, load one function, with clear errors.

BCC prints compiler errors and verifier logs straight to file descriptor 2. The helpers here
capture them and turn failures into a :class:`~tuner.errors.TunerError` that carries the
useful line, so that tuner's output stays one clean line per problem.

>>> from tuner.bcc_runtime import first_error_line
>>> first_error_line("In file x.c\\n/virtual/main.c:3:5: error: use of undeclared 'y'\\n")
"/virtual/main.c:3:5: error: use of undeclared 'y'"
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tuner.errors import TunerError

SETUP_FIX = "run `make setup` as root (installs python3-bpfcc, kernel headers, mounts tracefs)"


# where BCC looks for tracepoint formats, in its order (it needs them to compile a probe)
TRACEFS_PATHS = ("/sys/kernel/debug/tracing", "/sys/kernel/tracing")


def require_tracefs(paths: Sequence[str] = TRACEFS_PATHS) -> str:
    """Return the first of ``paths`` where tracefs shows ``sched:sched_switch``, or raise
    TunerError saying how to mount it (without it BCC fails with a confusing compile error).
    ``tuner doctor`` runs the same check on its ``--tracefs``.

    >>> require_tracefs() in TRACEFS_PATHS
    True
    >>> try:
    ...     require_tracefs(["/nonexistent"])
    ... except TunerError as e:
    ...     print(e.problem)
    tracefs is not mounted (no tracepoint events under /nonexistent)
    """
    for path in paths:
        if os.path.isdir(os.path.join(path, "events", "sched", "sched_switch")):
            return path
    problem = f"tracefs is not mounted (no tracepoint events under {' or '.join(paths)})"
    netns = ip_netns_exec_name()
    if netns:
        raise TunerError(
            f"{problem}: `ip netns exec {netns}` mounted a /sys of its own",
            f"run tuner outside it and name the namespace instead (target.netns = "
            f'"{netns}" in the config, --netns {netns} on the command line)',
        )
    raise TunerError(problem, f"mount -t tracefs tracefs {paths[-1]}, or run `make setup`")


def ip_netns_exec_name(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The network namespace this process runs in under `ip netns exec NAME`, else None.
    `ip netns exec` mounts a sysfs of its own on /sys with NAME as its source (iproute2's
    ipnetns.c), which hides tracefs.

    >>> ip_netns_exec_name() is None
    True
    """
    try:
        with open(mountinfo) as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, fs = left.split(), right.split()
                if len(fields) > 4 and fields[4] == "/sys" and len(fs) > 1 and fs[0] == "sysfs":
                    name = fs[1]
                    if name != "sysfs" and os.path.exists(f"/run/netns/{name}"):
                        return name
    except OSError:
        return None
    return None


def import_bcc() -> Any:
    """Return the ``bcc`` module, or raise TunerError saying how to install it."""
    try:
        import bcc  # noqa: PLC0415  (imported late: it is slow and needs tracefs)
    except ImportError as e:
        raise TunerError(f"BCC's Python bindings are not importable ({e})", SETUP_FIX) from None
    return bcc


def bpf_dir() -> Path:
    """Return the folder that holds tuner's BPF C sources (``bpf/`` beside ``tuner/``).

    >>> (bpf_dir() / "common.h").is_file()
    True
    """
    path = Path(__file__).resolve().parent.parent / "bpf"
    if not path.is_dir():
        raise TunerError(f"BPF sources not found at {path}", "install tuner from its source tree")
    return path


def header_constants(header: str) -> dict[str, int]:
    """The integer ``#define`` constants of ``bpf/<header>``.

    >>> header_constants("steer.h")["STEER_SLOTS"]
    256
    """
    text = (bpf_dir() / header).read_text()
    return {
        m.group(1): int(m.group(2), 0)
        for m in re.finditer(r"^\s*#define\s+(\w+)\s+(-?(?:0x[0-9a-fA-F]+|\d+))\b", text, re.M)
    }


def check_constants(header: str, ours: dict[str, int]) -> None:
    """Each constant of ``ours`` must be defined in ``bpf/<header>`` with the same value: the
    C side and the Python side share them, defined once each and checked here at load.

    >>> check_constants("steer.h", {"STEER_SLOTS": 128})
    Traceback (most recent call last):
    ...
    tuner.errors.TunerError: bpf/steer.h defines STEER_SLOTS as 256, the Python side as 128; \
fix: keep bpf/steer.h and its loader in step
    """
    theirs = header_constants(header)
    for name, value in ours.items():
        if theirs.get(name) != value:
            raise TunerError(
                f"bpf/{header} defines {name} as {theirs.get(name)}, the Python side as {value}",
                f"keep bpf/{header} and its loader in step",
            )


class Captured:
    """Text written to file descriptor 2 inside :func:`captured_stderr`."""

    text: str = ""


@contextmanager
def captured_stderr() -> Iterator[Captured]:
    """Redirect file descriptor 2 (not only ``sys.stderr``) into a buffer while active."""
    out = Captured()
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.text = tmp.read().decode(errors="replace")


def first_error_line(log: str) -> str:
    """Return the most telling line of a compiler or verifier log.

    >>> first_error_line("0: (b7) r0 = 0\\nR1 invalid mem access 'scalar'\\nprocessed 3 insns\\n")
    "R1 invalid mem access 'scalar'"
    """
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for ln in lines:
        if "error:" in ln:
            return ln
    for ln in reversed(lines):
        if not ln.startswith(("processed ", "verification time", "stack depth", "HINT:")):
            return ln
    return lines[-1] if lines else "no log"


def compile_program(
    text: str | None = None,
    src_file: Path | None = None,
    cflags: Sequence[str] = (),
    where: str = "",
) -> Any:
    """Compile BPF C with BCC and return the ``bcc.BPF`` object (tracepoints auto-attach).

    Raises TunerError with the compiler's first error line when it fails; ``where`` names
    the program in that message.
    """
    bcc = import_bcc()
    flags = [f"-I{bpf_dir()}", *cflags]
    kwargs: dict[str, Any] = {"cflags": flags}
    if src_file is not None:
        kwargs["src_file"] = str(src_file).encode()
    else:
        kwargs["text"] = (text or "").encode()
    with captured_stderr() as err:
        try:
            return bcc.BPF(**kwargs)
        except Exception as e:  # BCC raises plain Exception
            failure = e
    where = where or (src_file.name if src_file else "BPF program")
    line = first_error_line(err.text or str(failure))
    raise TunerError(f"cannot compile {where}: {line}", compile_fix(line))


def compile_fix(line: str) -> str:
    """What to do about a program that did not compile or load, by its first error line.

    >>> compile_fix("The sequence of 8193 jumps is too complex.")
    "the kernel's verifier found it too complex: fewer entity slots (max_entities)"
    >>> compile_fix("fatal error: 'linux/sched.h' file not found")
    'check kernel headers with `tuner doctor`'
    """
    if "too complex" in line or "too large" in line:
        return "the kernel's verifier found it too complex: fewer entity slots (max_entities)"
    return "check kernel headers with `tuner doctor`"


def attached_programs(bpf: Any) -> dict[str, int]:
    """The tracepoint programs BCC attached on load, by attach point, and their fds
    (``sched_switch`` for a raw tracepoint, ``sock:inet_sock_set_state`` for a tracepoint).

    >>> class Fn:
    ...     def __init__(self, fd): self.fd = fd
    >>> class B:
    ...     funcs = {b"raw_tracepoint__sys_enter": Fn(7), b"tracepoint__tcp__tcp_probe": Fn(8),
    ...              b"tuner_kick": Fn(9)}
    >>> attached_programs(B())
    {'sys_enter': 7, 'tcp:tcp_probe': 8}
    """
    out = {}
    for name, fn in bpf.funcs.items():
        text = name.decode() if isinstance(name, bytes) else name
        for prefix in ("raw_tracepoint__", "tracepoint__"):
            if text.startswith(prefix):
                out[text[len(prefix) :].replace("__", ":")] = fn.fd
    return out


def load_function(bpf: Any, name: str, prog_type: int) -> Any:
    """Load function ``name`` of a compiled program as ``prog_type``; return BCC's handle.

    Raises TunerError with the verifier's telling line when the kernel refuses it.
    """
    with captured_stderr() as err:
        try:
            return bpf.load_func(name.encode(), prog_type)
        except Exception as e:
            failure = e
    raise TunerError(
        f"kernel refused BPF program {name}: {first_error_line(err.text or str(failure))}",
        "see `tuner doctor` for what this kernel supports",
    )
