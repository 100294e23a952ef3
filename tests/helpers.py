"""Test helpers: child processes held at a gate, network namespaces that clean up, and
`tuner run` as a subprocess with its own config, socket, log and pin name."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from conftest import REPO, run_tuner

from tuner.agent.control import request
from tuner.cluster.netutil import linked
from tuner.schema import to_toml

PORT = 8000


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
def netns_pair(subnet: str = "198.19.250") -> Iterator[tuple[str, str, str, str]]:
    """Two network namespaces joined by a veth pair: yields (ns_a, addr_a, ns_b, addr_b).

    Both are deleted on exit, also when the body raises (see :func:`topology`).
    """
    link = ("a", "tva", "b", "tvb", f"{subnet}.1/24", f"{subnet}.2/24")
    with topology([link]) as ns:
        yield ns["a"], f"{subnet}.1", ns["b"], f"{subnet}.2"


def tuner_prog_ids() -> set[int]:
    """IDs of loaded BPF programs whose names are tuner's (tracepoint__*, sys_*, tuner_*)."""
    out = subprocess.run(
        ["bpftool", "-j", "prog", "list"], capture_output=True, text=True, check=True
    ).stdout
    names = ("tracepoint__", "sys_enter", "sys_exit", "tuner_kick", "doctor_")
    return {p["id"] for p in json.loads(out) if p.get("name", "").startswith(names)}


def prog_holders() -> dict[int, set[int]]:
    """``{program id: pids}`` of every BPF program a live process holds an fd of (a program's
    or a link's), from /proc/PID/fdinfo, as ``bpftool prog show`` lists its pids."""
    held: dict[int, set[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone
        for fd in fds:
            try:
                if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith(
                    ("anon_inode:bpf-prog", "anon_inode:bpf_link")
                ):
                    continue
                info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
            except OSError:
                continue
            for line in info.splitlines():
                if line.startswith("prog_id:"):
                    held.setdefault(int(line.split()[1]), set()).add(int(pid))
    return held


def progs_of(pid: int) -> set[int]:
    """Tuner's programs that process ``pid`` holds."""
    return {p for p, pids in prog_holders().items() if pid in pids} & tuner_prog_ids()


def no_prog_left(before: set[int], seconds: float = 15.0) -> None:
    """Fail unless every tuner program loaded since ``before`` is soon gone, or held by a live
    process other than this one: another test's, running beside (see tests/conftest.py). A
    program pinned, or left attached to a socket or an interface, has no holder and fails."""

    def leaks() -> set[int]:
        held = prog_holders()
        return {p for p in tuner_prog_ids() - before if not held.get(p, set()) - {os.getpid()}}

    try:
        wait_for(lambda: not leaks(), seconds)
    except AssertionError:
        raise AssertionError(f"BPF programs left loaded: {sorted(leaks())}") from None


def topology(links: list[tuple[str, str, str, str, str | None, str | None]]):
    """Namespaces joined by veth pairs (see :func:`tuner.cluster.netutil.linked`)."""
    return linked(links)


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


class Agent:
    """`tuner run` as a subprocess with its own config, socket, log and pin name."""

    def __init__(
        self, tmp_path: Path, pids: list[int], mode: str, name: str = "", **sections
    ) -> None:
        self.name = name or f"t-agent-{uuid.uuid4().hex[:6]}"
        self.sock = str(tmp_path / "agent.sock")
        self.log = tmp_path / "decisions.jsonl"
        cfg = {
            "target": {"pids": pids, "port": PORT},
            "agent": {
                "name": self.name,
                "control_socket": self.sock,
                "decision_log": str(self.log),
                "lease_ms": 300,
            },
            "model": {"warmup_windows": 5},
        }
        for sec, values in sections.items():
            cfg.setdefault(sec, {}).update(values)
        path = tmp_path / "tuner.toml"
        path.write_text(to_toml(cfg))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tuner", "run", "--config", str(path), "--mode", mode],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.proc.stderr.read()
            try:
                request(self.sock, {"cmd": "status"}, timeout=1)
                break
            except Exception:
                assert time.monotonic() < deadline, "agent did not start"
                time.sleep(0.2)

    def status(self) -> dict:
        return request(self.sock, {"cmd": "status"})

    def entries(self) -> list[dict]:
        """The decision log so far (a line still being written is left out)."""
        out = []
        for x in self.log.read_text().splitlines() if self.log.exists() else []:
            try:
                out.append(json.loads(x))
            except ValueError:
                continue
        return out

    def busy_windows(self, **match) -> int:
        """Logged windows with load on some worker (and these values of the workers' log)."""
        return sum(
            1
            for e in self.entries()
            if max(e.get("workers", {}).get("loads", [0.0])) > 0.05
            and all(e.get(k, e["workers"].get(k)) == v for k, v in match.items())
        )

    def stop(self) -> subprocess.CompletedProcess:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # its threads' stacks to stderr (tuner.cli)
            try:
                out, err = self.proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, err = self.proc.communicate()
            stacks = err[-6000:]
            raise AssertionError(f"the agent did not stop 30 s after SIGTERM:\n{stacks}") from None
        run_tuner("cleanup")
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)


def wait_for(cond, seconds: float = 30.0):
    """Poll ``cond`` until it gives a true value (returned); fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")
