"""Test helpers: child processes held at a gate, and network namespaces that clean up."""

from __future__ import annotations

import contextlib
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

    Both are deleted on exit, also when the body raises (see :func:`topology`).
    """
    link = ("a", "tva", "b", "tvb", f"{subnet}.1/24", f"{subnet}.2/24")
    with topology([link]) as ns:
        yield ns["a"], f"{subnet}.1", ns["b"], f"{subnet}.2"


def tuner_prog_ids() -> set[int]:
    """IDs of loaded BPF programs whose names are tuner's (tracepoint__*, sys_*, tuner_*)."""
    import json

    out = subprocess.run(
        ["bpftool", "-j", "prog", "list"], capture_output=True, text=True, check=True
    ).stdout
    names = ("tracepoint__", "sys_enter", "sys_exit", "tuner_kick", "doctor_")
    return {p["id"] for p in json.loads(out) if p.get("name", "").startswith(names)}


@contextlib.contextmanager
def topology(links: list[tuple[str, str, str, str, str | None, str | None]]) -> Iterator[dict]:
    """Namespaces joined by veth pairs. Each link is (ns_a, if_a, ns_b, if_b, addr_a, addr_b)
    with addresses in CIDR form or None. IPv6 is off so that interface counters count only
    the test's traffic. Yields {logical ns name: real ns name}; everything is deleted on exit.
    """
    tag = uuid.uuid4().hex[:6]
    names = {n: f"tuner-t-{tag}-{n}" for link in links for n in (link[0], link[2])}
    try:
        for real in names.values():
            subprocess.run(["ip", "netns", "add", real], check=True)
            for key in ("all", "default"):
                subprocess.run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        real,
                        "sysctl",
                        "-qw",
                        f"net.ipv6.conf.{key}.disable_ipv6=1",
                    ],
                    check=True,
                )
            subprocess.run(["ip", "-n", real, "link", "set", "lo", "up"], check=True)
        for ns_a, if_a, ns_b, if_b, addr_a, addr_b in links:
            subprocess.run(
                [
                    "ip",
                    "link",
                    "add",
                    if_a,
                    "netns",
                    names[ns_a],
                    "type",
                    "veth",
                    "peer",
                    "name",
                    if_b,
                    "netns",
                    names[ns_b],
                ],
                check=True,
            )
            for ns, ifname, addr in ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)):
                if addr:
                    subprocess.run(
                        ["ip", "-n", names[ns], "addr", "add", addr, "dev", ifname], check=True
                    )
                subprocess.run(["ip", "-n", names[ns], "link", "set", ifname, "up"], check=True)
        yield names
    finally:
        for real in names.values():
            subprocess.run(["ip", "netns", "del", real], stderr=subprocess.DEVNULL)


def rx_packets(ns: str, ifname: str) -> int:
    """Packets received by an interface in a namespace."""
    import json

    out = subprocess.run(
        ["ip", "-n", ns, "-s", "-j", "link", "show", ifname],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["packets"])
