"""``tuner bench steer``: the cost per packet of the XDP steering program, measured with
BPF_PROG_TEST_RUN against a no-op XDP program, interleaved in one run.

Three paths of the steering program are timed on the same TCP packet of an established flow:
served from the per-CPU flow cache (the fast path, ``xdp_ns``), served from the flow table
(a build without the cache: what a flow whose cache slot was taken by another flow costs), and
passed with the lease expired. sk_reuseport programs cannot be run by BPF_PROG_TEST_RUN, so
only the XDP side is measured.
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


def run(repeat: int = 1_000_000, rounds: int = 9) -> dict:
    """Mean ns per run of each program (median over rounds) and the ratios to the no-op
    (median over rounds of the ratio within the round)."""
    if repeat < 1 or rounds < 1:
        raise TunerError(f"--repeat and --rounds must be >= 1 (got {repeat}, {rounds})")
    pkt = frame(ipv4("198.19.9.1", "198.19.9.2", tcp(40000, 80)))
    noop_bpf = bcc_runtime.compile_program(text=NOOP)
    name = f"bench-{os.getpid()}"
    try:
        noop = bcc_runtime.load_function(noop_bpf, "noop", ProgType.XDP)
        with (
            XdpSteering(name=name, devices=["lo"], mode="active", lease_ms=60000) as steer,
            XdpSteering(
                name=f"{name}-nc", devices=["lo"], mode="active", lease_ms=60000, flow_cache=False
            ) as uncached,
        ):
            for s in (steer, uncached):
                s.apply([0] * 256)
            times: dict[str, list[int]] = {"noop": [], "steer": [], "uncached": [], "unleased": []}

            def timed(key: str, fd: int) -> None:
                times[key].append(bpfsys.prog_test_run(fd, pkt, repeat).duration_ns)

            for _ in range(rounds + 1):
                timed("noop", noop.fd)
                steer.renew()
                uncached.renew()
                timed("steer", steer.prog.fd)
                timed("uncached", uncached.prog.fd)
                steer.expire()
                timed("unleased", steer.prog.fd)
    finally:
        noop_bpf.cleanup()
    times = {k: v[1:] for k, v in times.items()}  # round 0 warmed caches and clocks up
    m = {k: median(v) for k, v in times.items()}

    def ratio(k: str) -> float:
        """Median of the per-round ratios: each round times both programs back to back, so
        a slow spell of this shared machine falls on both sides of a ratio."""
        return round(median(t / max(n, 1) for t, n in zip(times[k], times["noop"], strict=True)), 3)

    return {
        "repeat": repeat,
        "rounds": rounds,
        "xdp_ns": m["steer"],
        "xdp_noop_ns": m["noop"],
        "xdp_ratio": ratio("steer"),
        "xdp_uncached_ns": m["uncached"],
        "xdp_uncached_ratio": ratio("uncached"),
        "xdp_unleased_ns": m["unleased"],
        "xdp_unleased_ratio": ratio("unleased"),
    }


def render(r: dict) -> str:
    return (
        f"XDP steering, established flow (flow cache): {r['xdp_ns']} ns/packet\n"
        f"XDP steering, established flow (flow table): {r['xdp_uncached_ns']} ns/packet\n"
        f"XDP steering, lease expired:                 {r['xdp_unleased_ns']} ns/packet\n"
        f"XDP no-op:                                   {r['xdp_noop_ns']} ns/packet\n"
        f"ratio steering / no-op:                      {r['xdp_ratio']} (flow table: "
        f"{r['xdp_uncached_ratio']}; lease expired: {r['xdp_unleased_ratio']})\n"
        f"({r['rounds']} rounds of {r['repeat']:,} runs, medians; sk_reuseport cannot be "
        f"test-run)"
    )
