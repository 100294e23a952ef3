"""Test helpers: child processes held at a gate, and network namespaces that clean up."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator


class Gated:
    """A Python child that waits for :meth:`go` (a byte on stdin) before running ``body``."""

    def __init__(self, body: str, netns: str | None = None, pass_fds: tuple[int, ...] = ()) -> None:
        code = "import sys\nsys.stdin.buffer.read(1)\n" + textwrap.dedent(body)
        cmd = [sys.executable, "-c", code]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=pass_fds,
        )
        self.pid = self.proc.pid

    def go(self) -> None:
        self.proc.stdin.write(b"g")
        self.proc.stdin.flush()

    def wait(self, timeout: float = 30) -> str:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err.decode()
        return out.decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def netns_pair(subnet: str = "10.250.0") -> Iterator[tuple[str, str, str, str]]:
    """Two network namespaces joined by a veth pair: yields (ns_a, addr_a, ns_b, addr_b).

    Both are deleted on exit, also when the body raises.
    """
    tag = uuid.uuid4().hex[:6]
    a, b = f"tuner-t-{tag}-a", f"tuner-t-{tag}-b"
    sh = ["ip", "netns", "add", a], ["ip", "netns", "add", b]
    try:
        for cmd in sh:
            subprocess.run(cmd, check=True)
        for cmd in (
            [
                "ip",
                "link",
                "add",
                f"tv{tag}a",
                "netns",
                a,
                "type",
                "veth",
                "peer",
                "name",
                f"tv{tag}b",
                "netns",
                b,
            ],
            ["ip", "-n", a, "addr", "add", f"{subnet}.1/24", "dev", f"tv{tag}a"],
            ["ip", "-n", b, "addr", "add", f"{subnet}.2/24", "dev", f"tv{tag}b"],
            ["ip", "-n", a, "link", "set", f"tv{tag}a", "up"],
            ["ip", "-n", b, "link", "set", f"tv{tag}b", "up"],
            ["ip", "-n", a, "link", "set", "lo", "up"],
            ["ip", "-n", b, "link", "set", "lo", "up"],
        ):
            subprocess.run(cmd, check=True)
        yield a, f"{subnet}.1", b, f"{subnet}.2"
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


def tuner_prog_ids() -> set[int]:
    """IDs of loaded BPF programs whose names are tuner's (tracepoint__*, sys_*, tuner_*)."""
    import json

    out = subprocess.run(
        ["bpftool", "-j", "prog", "list"], capture_output=True, text=True, check=True
    ).stdout
    names = ("tracepoint__", "sys_enter", "sys_exit", "tuner_kick", "doctor_")
    return {p["id"] for p in json.loads(out) if p.get("name", "").startswith(names)}


def ensure(cond: bool, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


os.environ.setdefault("PYTHONUNBUFFERED", "1")
