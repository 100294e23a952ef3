"""``tuner doctor`` against the real kernel: all green here, broken requirements become rows."""

from __future__ import annotations

import json
import re
import textwrap

import pytest

from tuner.bpfsys import ProgType
from tuner.doctor import Doctor, ProgramSpec

pytestmark = pytest.mark.kernel


def test_doctor_json_is_ok_on_this_machine(tuner_cli):
    proc = tuner_cli("doctor", "--json")
    report = json.loads(proc.stdout)
    failed = [c for c in report["checks"] if not c["ok"] and c["required"]]
    assert report["ok"] is True, failed
    assert proc.returncode == 0
    names = {c["name"] for c in report["checks"]}
    for need in (
        "root",
        "kernel",
        "btf",
        "tracefs",
        "bpffs",
        "bcc",
        "bcc headers",
        "program: tracepoint",
        "program: xdp",
        "program: sk_reuseport",
        "map: ringbuf",
        "map: sockmap",
        "map: devmap",
        "map: cpumap",
        "netns + veth",
    ):
        assert need in names
    for c in report["checks"]:
        assert set(c) >= {"name", "ok", "detail", "fix"}
    # the tracepoint's calls against the kernel's own count of switches, over one second
    row = next(c for c in report["checks"] if c["name"] == "sched_switch coverage")
    seen, kernel = map(
        int, re.match(r"(\d+) of the kernel's (\d+) context", row["detail"]).groups()
    )
    assert not row["required"] and 0 < seen <= kernel + 5  # (the two counts are read apart)
    assert row["ok"] == (kernel - seen <= 0.01 * kernel)


def test_missing_tracefs_is_a_failed_row_with_a_fix(tuner_cli):
    proc = tuner_cli("doctor", "--json", "--tracefs", "/nonexistent/tracing")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    row = next(c for c in report["checks"] if c["name"] == "tracefs")
    assert row["ok"] is False
    assert "mount -t tracefs" in row["fix"]


def test_missing_bpffs_in_text_mode_shows_fail_and_fix(tuner_cli):
    proc = tuner_cli("doctor", "--bpffs", "/tmp")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stdout.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("FAIL") and "bpffs" in ln)
    assert "fix: mount -t bpf bpf /tmp" in lines[i + 1]
    assert lines[-1] == "doctor: 1 of 20 required checks failed"


# An XDP program that reads packet data without a bounds check: compiles, the verifier refuses.
UNSAFE_XDP = ProgramSpec(
    "program: xdp",
    "doctor_bad_xdp",
    ProgType.XDP,
    "int doctor_bad_xdp(struct xdp_md *ctx) {"
    " unsigned char *p = (void *)(long)ctx->data; return p[100] ? XDP_PASS : XDP_DROP; }",
)


def test_program_the_verifier_refuses_is_a_failed_row():
    report = Doctor(programs=[UNSAFE_XDP]).run()
    row = next(c for c in report.checks if c.name == "program: xdp")
    assert not row.ok
    assert "doctor_bad_xdp" in row.detail and "outside of the packet" in row.detail
    assert row.fix
    assert not report.ok


def test_program_failure_through_the_cli_exits_1_without_traceback(tmp_path, tuner_cli):
    script = textwrap.dedent(f"""
        import tuner.doctor as d
        d.PROGRAMS = (d.ProgramSpec({UNSAFE_XDP.name!r}, {UNSAFE_XDP.func!r},
                      {int(UNSAFE_XDP.prog_type)}, {UNSAFE_XDP.source!r}),)
        from tuner.cli import main
        raise SystemExit(main(["doctor", "--json"]))
    """)
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    row = next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "program: xdp")
    assert row["ok"] is False and row["fix"]


def test_uncompilable_program_fails_the_headers_row():
    broken = ProgramSpec("program: xdp", "f", ProgType.XDP, "int f(struct xdp_md *ctx) { oops }")
    report = Doctor(programs=[broken]).run()
    rows = {c.name: c for c in report.checks}
    assert not rows["bcc headers"].ok and "error:" in rows["bcc headers"].detail
    assert not rows["program: xdp"].ok


def test_unreadable_jiffies_fails_the_lease_clock_row(tmp_path):
    report = Doctor(timer_list=str(tmp_path / "timer_list")).run()
    row = next(c for c in report.checks if c.name == "lease clock")
    assert not row.ok and "timer_list" in row.detail and row.fix
