"""``tuner bench steer``: the cost per packet of the XDP steering program, measured with
BPF_PROG_TEST_RUN against a no-op XDP program, interleaved in one run.

sk_reuseport programs cannot be run by BPF_PROG_TEST_RUN, so only the XDP side is measured.
"""

from __future__ import annotations

import os
from statistics import median

from tuner import bcc_runtime, bpfsys
from tuner.actuate.xdp import XdpSteering
from tuner.bpfsys import ProgType
from tuner.errors import TunerError
from tuner.packets import frame, ipv4, tcp

NOOP = "int noop(struct xdp_md *ctx) { return XDP_PASS; }"


def run(repeat: int = 1_000_000, rounds: int = 5) -> dict:
    """Mean ns per run of each program (median over rounds) and the ratios to the no-op."""
    if repeat < 1 or rounds < 1:
        raise TunerError(f"--repeat and --rounds must be >= 1 (got {repeat}, {rounds})")
    pkt = frame(ipv4("10.9.0.1", "10.9.0.2", tcp(40000, 80)))
    noop_bpf = bcc_runtime.compile_program(text=NOOP)
    try:
        noop = bcc_runtime.load_function(noop_bpf, "noop", ProgType.XDP)
        with XdpSteering(
            name=f"bench-{os.getpid()}", devices=["lo"], mode="active", lease_ms=60000
        ) as steer:
            steer.apply([0] * 256)
            times: dict[str, list[int]] = {"noop": [], "steer": [], "unleased": []}
            for _ in range(rounds):
                times["noop"].append(bpfsys.prog_test_run(noop.fd, pkt, repeat).duration_ns)
                steer.renew()
                times["steer"].append(bpfsys.prog_test_run(steer.prog.fd, pkt, repeat).duration_ns)
                steer.expire()
                times["unleased"].append(
                    bpfsys.prog_test_run(steer.prog.fd, pkt, repeat).duration_ns
                )
    finally:
        noop_bpf.cleanup()
    m = {k: median(v) for k, v in times.items()}
    return {
        "repeat": repeat,
        "rounds": rounds,
        "xdp_ns": m["steer"],
        "xdp_noop_ns": m["noop"],
        "xdp_ratio": round(m["steer"] / max(m["noop"], 1), 3),
        "xdp_unleased_ns": m["unleased"],
        "xdp_unleased_ratio": round(m["unleased"] / max(m["noop"], 1), 3),
    }


def render(r: dict) -> str:
    return (
        f"XDP steering, established flow: {r['xdp_ns']} ns/packet\n"
        f"XDP steering, lease expired:    {r['xdp_unleased_ns']} ns/packet\n"
        f"XDP no-op:                      {r['xdp_noop_ns']} ns/packet\n"
        f"ratio steering / no-op:         {r['xdp_ratio']} (lease expired: "
        f"{r['xdp_unleased_ratio']})\n"
        f"({r['rounds']} rounds of {r['repeat']:,} runs, medians; sk_reuseport cannot be "
        f"test-run)"
    )
