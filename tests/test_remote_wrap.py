"""The wrapper every process on an SSH host runs under (tuner.cluster.remote.WRAP), run here
with sh as sshd would: it reports the pid, passes the exit status on, sends the process's
stderr to its log, and kills the process when its input (the SSH channel) closes."""

from __future__ import annotations

import os
import subprocess

from tuner.cluster.remote import WRAP


def _wrapped(argv: list[str], log: str = "/dev/null") -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(["sh", "-c", WRAP, "sh", log, *argv], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    return proc, int(proc.stderr.readline())


def test_the_wrapper_passes_the_exit_status_output_and_stderr_on(tmp_path):
    log = tmp_path / "err.log"
    proc, pid = _wrapped(["sh", "-c", "echo out; echo err >&2; exit 3"], str(log))
    assert proc.stdout.read() == "out\n" and proc.wait(timeout=30) == 3 and pid > 0
    assert log.read_text() == "err\n"


def test_closing_the_input_kills_the_process():
    proc, pid = _wrapped(["sleep", "600"])
    os.kill(pid, 0)  # running
    proc.stdin.close()  # what a closed SSH channel does
    assert proc.wait(timeout=30) == 128 + 15  # SIGTERM
    assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]
