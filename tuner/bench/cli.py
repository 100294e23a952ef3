"""``tuner bench``: the tuner's own costs, measured side by side in one run, as ratios.

>>> import argparse
>>> p = argparse.ArgumentParser(); sub = p.add_subparsers()
>>> register(sub, argparse.HelpFormatter)
>>> p.parse_args(["bench", "loop", "--windows", "50"]).windows
50
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from tuner.errors import TunerError
from tuner.system import require_root


def register(sub: argparse._SubParsersAction, formatter: Any) -> None:
    """Add ``tuner bench`` and its benchmarks to the command line."""
    p = sub.add_parser(
        "bench",
        formatter_class=formatter,
        help="measure the tuner's own costs",
        description="Benchmarks that measure their variants side by side in one run and\n"
        "report ratios (the machine may be shared and noisy).",
        epilog="examples:\n  tuner bench overhead\n  tuner bench steer --json",
    )
    bench = p.add_subparsers(title="benchmarks", metavar="<benchmark>")
    o = bench.add_parser(
        "overhead",
        formatter_class=formatter,
        help="throughput of syscall-, context-switch- and TCP-heavy workloads, bare vs probed",
        description="Run a getppid(2) loop, a pipe ping-pong and a TCP ping-pong on loopback\n"
        "(64-byte messages; both ping-pongs are two processes on one CPU), each bare,\n"
        "with empty programs on raw_syscalls sys_enter/sys_exit alone (sysfloor) and\n"
        "on all the probes' attach points (floor: what no probe there can undercut),\n"
        "with all probes observing them, and (getppid) with the syscall probe timing\n"
        "one call in 16, counting only the net and poll classes (interest), and\n"
        "attached 0.2 of each second (duty); then nginx (2 workers, wrk on loopback)\n"
        "bare, with the agent's probes, with all probes and with the floor. Arms\n"
        "rotate each round.\n"
        "Prints each throughput ratio to bare, the nanoseconds each arm adds to one\n"
        "operation, raw events per second seen in the kernel, and records lost; then,\n"
        "from one more run of each workload with the kernel's BPF run-time statistics\n"
        "on, the nanoseconds per event of each attach point, probe against empty program.",
        epilog="examples:\n  tuner bench overhead\n  tuner bench overhead --seconds 3 --rounds 5"
        " --json",
    )
    o.add_argument(
        "--seconds",
        type=float,
        default=2.0,
        metavar="S",
        help="length of each run in seconds (default: %(default)s)",
    )
    o.add_argument(
        "--rounds",
        type=int,
        default=3,
        metavar="N",
        help="bare/probed pairs per workload; medians are reported (default: %(default)s)",
    )
    o.add_argument("--json", action="store_true", help="print one JSON object")
    o.set_defaults(func=_run_bench_overhead)
    st = bench.add_parser(
        "steer",
        formatter_class=formatter,
        help="cost per packet of the XDP steering program vs a no-op XDP program",
        description="Run the XDP steering program (established flow from the flow cache,\n"
        "from the flow table, and with the lease expired) and a no-op XDP program on\n"
        "the same packet with BPF_PROG_TEST_RUN, rounds interleaved, and print mean\n"
        "ns per packet and the ratios.",
        epilog="examples:\n  tuner bench steer\n  tuner bench steer --repeat 100000 --json",
    )
    st.add_argument(
        "--repeat",
        type=int,
        default=1_000_000,
        metavar="N",
        help="runs per measurement (default: %(default)s)",
    )
    st.add_argument(
        "--rounds",
        type=int,
        default=9,
        metavar="N",
        help="interleaved rounds; medians are reported (default: %(default)s)",
    )
    st.add_argument("--json", action="store_true", help="print one JSON object")
    st.set_defaults(func=_run_bench_steer)
    lp = bench.add_parser(
        "loop",
        formatter_class=formatter,
        help="control-loop latency (window closed -> table written) for 8, 64, 512 entities",
        description="Feed synthetic scheduler windows with a periodic hotspot through the\n"
        "agent's real loop (learner, policy, table written into a kernel map) for\n"
        "8, 64 and 512 entities; print latency percentiles and model vs baseline MAE.",
        epilog="examples:\n  tuner bench loop\n  tuner bench loop --windows 1000 --json",
    )
    lp.add_argument(
        "--windows", type=int, default=300, metavar="N", help="windows per size (default: 300)"
    )
    lp.add_argument("--json", action="store_true", help="print one JSON object")
    lp.set_defaults(func=_run_bench_loop)
    ag = bench.add_parser(
        "agent",
        formatter_class=formatter,
        help="the agent's own CPU and start-up time, against 4 and 64 reference workers",
        description="Run the agent (tuner run: real probes, sk_reuseport steering, shadow\n"
        "mode, decision log) against 4 and then 64 reference-server workers on\n"
        "loopback under a light load; after warm-up, read its CPU time over S seconds\n"
        "and print it as a fraction of one core (cpu_frac_4, cpu_frac_64), its loop\n"
        "latency, and the time from start to its first decision, for a first start\n"
        "and a second one that finds the BPF programs compiled (startup_s).",
        epilog="examples:\n  tuner bench agent\n  tuner bench agent --seconds 60 --json",
    )
    ag.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        metavar="S",
        help="steady state measured per size, in seconds (default: %(default)s)",
    )
    ag.add_argument("--json", action="store_true", help="print one JSON object")
    ag.set_defaults(func=_run_bench_agent)
    tr = bench.add_parser(
        "train",
        formatter_class=formatter,
        help="time `tuner train` on a synthetic trace (default 1 M windows x 4 workers)",
        description="Write a synthetic trace (a hotspot that moves, a period, noise) of N\n"
        "windows for E workers, then run the whole of `tuner train` on it (read,\n"
        "features, fit, warm start, save) and print the time it took.",
        epilog="examples:\n  tuner bench train\n  tuner bench train --windows 100000 --json",
    )
    tr.add_argument(
        "--windows",
        type=int,
        default=1_000_000,
        metavar="N",
        help="windows in the trace (default: %(default)s)",
    )
    tr.add_argument(
        "--entities",
        type=int,
        default=4,
        metavar="E",
        help="workers per window (default: %(default)s)",
    )
    tr.add_argument("--json", action="store_true", help="print one JSON object")
    tr.set_defaults(func=_run_bench_train)
    ft = bench.add_parser(
        "fleet-train",
        formatter_class=formatter,
        help="`tuner train --dataset` over a synthetic fleet larger than a quarter of memory",
        description="Write a dataset of N nodes' synthetic recordings (W windows x E workers\n"
        "each; the defaults make about 8 GB read whole), train on it with\n"
        "`tuner train --dataset` in a child process, and print its time and peak\n"
        "resident memory beside the dataset's size. The dataset is removed afterwards.",
        epilog="examples:\n  tuner bench fleet-train\n"
        "  tuner bench fleet-train --nodes 8 --windows 5000 --dir /var/tmp --json",
    )
    ft.add_argument("--nodes", type=int, default=48, metavar="N", help="nodes (default: 48)")
    ft.add_argument(
        "--windows", type=int, default=20_000, metavar="W", help="windows a node (default: 20000)"
    )
    ft.add_argument(
        "--entities", type=int, default=64, metavar="E", help="workers a node (default: 64)"
    )
    ft.add_argument(
        "--sample-rows",
        type=int,
        default=2_000_000,
        metavar="N",
        help="rows tuner train keeps (default: %(default)s)",
    )
    ft.add_argument("--dir", metavar="DIR", help="where to write the dataset (default: $TMPDIR)")
    ft.add_argument("--json", action="store_true", help="print one JSON object")
    ft.set_defaults(func=_run_bench_fleet)
    p.set_defaults(func=lambda _args: p.print_help() or 2)


def _run_bench_fleet(args: argparse.Namespace) -> int:
    from tuner.bench import fleet

    if args.nodes < 1 or args.windows < 100 or args.entities < 1 or args.sample_rows < 100:
        raise TunerError("--nodes and --entities must be >= 1, --windows and --sample-rows >= 100")
    if args.dir and not os.path.isdir(args.dir):
        raise TunerError(f"--dir {args.dir} is not a directory", "give an existing directory")
    result = fleet.run(
        args.nodes, args.windows, args.entities, args.sample_rows, where=args.dir,
        progress=lambda m: print(f"bench fleet-train: {m}", file=sys.stderr, flush=True),
    )  # fmt: skip
    print(json.dumps(result, indent=2) if args.json else fleet.render(result))
    return 0


def _run_bench_overhead(args: argparse.Namespace) -> int:
    require_root("tuner bench overhead")
    from tuner.bench import overhead

    result = overhead.run(args.seconds, args.rounds, progress=overhead.progress_line)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(json.dumps(result, indent=2) if args.json else overhead.render(result))
    return 0


def _run_bench_loop(args: argparse.Namespace) -> int:
    require_root("tuner bench loop")
    from tuner.bench import loop

    result = loop.run(args.windows)
    print(json.dumps(result, indent=2) if args.json else loop.render(result))
    return 0


def _run_bench_agent(args: argparse.Namespace) -> int:
    require_root("tuner bench agent")
    from tuner.bench import agent

    if args.seconds <= 0:
        raise TunerError(f"--seconds must be positive; got {args.seconds:g}")
    result = agent.run(args.seconds, progress=lambda m: print(f"bench agent: {m}", file=sys.stderr))
    print(json.dumps(result, indent=2) if args.json else agent.render(result))
    return 0


def _run_bench_train(args: argparse.Namespace) -> int:
    from tuner.bench.train import bench

    if args.windows < 100 or args.entities < 1:
        raise TunerError("--windows must be >= 100 and --entities >= 1")
    print(f"bench train: {args.windows} windows x {args.entities} workers", file=sys.stderr)
    r = bench(args.windows, args.entities)
    if args.json:
        print(json.dumps(r))
    else:
        print(
            f"train on {r['rows']} rows ({r['windows']} windows x {r['entities']}): "
            f"{r['train_s']} s (fit {r['fit_s']} s, read {r['read_s']} s); held-out MAE "
            f"{r['holdout_model_mae']} vs last value {r['holdout_baseline_mae']}"
        )
    return 0


def _run_bench_steer(args: argparse.Namespace) -> int:
    require_root("tuner bench steer")
    from tuner.bench import steer

    result = steer.run(args.repeat, args.rounds)
    print(json.dumps(result, indent=2) if args.json else steer.render(result))
    return 0
