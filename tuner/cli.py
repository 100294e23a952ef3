"""The ``tuner`` command line: one subcommand per job, errors as one line, ``--debug`` for more.

Each subcommand is registered by a ``_add_<name>`` function here and implemented in the
module that owns the concept; this module only parses arguments and reports errors.

>>> from tuner.cli import build_parser
>>> build_parser().parse_args(["doctor", "--json"]).json
True
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence

from tuner import __version__
from tuner.errors import TunerError
from tuner.system import require_root

DESCRIPTION = """\
tuner watches a running workload through eBPF, learns online where its hotspots will be,
and steers the kernel away from them (XDP redirection, SO_REUSEPORT socket placement).
It needs root. Start with `tuner doctor` to see whether this machine can run it."""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30, width=80)


def _add_doctor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        formatter_class=_formatter,
        help="check that this machine can run the tuner, and say how to fix what is missing",
        description="Check every requirement of the tuner by trying it (root, kernel, tracefs,\n"
        "bpffs, BCC, each BPF program and map type used, network namespaces).\n"
        "Exit status 0 when all required checks pass, 1 otherwise.",
        epilog="examples:\n  tuner doctor\n  tuner doctor --json | jq .ok",
    )
    p.add_argument(
        "--json", action="store_true", help='print one JSON object {"ok": bool, "checks": [...]}'
    )
    p.add_argument(
        "--tracefs",
        default="/sys/kernel/tracing",
        metavar="PATH",
        help="where tracefs is mounted (default: %(default)s)",
    )
    p.add_argument(
        "--bpffs",
        default="/sys/fs/bpf",
        metavar="PATH",
        help="where the BPF file system is mounted (default: %(default)s)",
    )
    p.set_defaults(func=_run_doctor)


def _run_doctor(args: argparse.Namespace) -> int:
    from tuner.doctor import Doctor

    report = Doctor(tracefs=args.tracefs, bpffs=args.bpffs).run()
    print(json.dumps(report.to_json(), indent=2) if args.json else report.render())
    return 0 if report.ok else 1


def _add_observe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "observe",
        formatter_class=_formatter,
        help="show live what the probes see per task, process, socket and CPU",
        description="Attach the probes (scheduler, syscalls, network) and show a table per\n"
        "entity, refreshed every interval, or one JSON line per entity and window.\n"
        "Selectors combine with OR; with none, every process is observed.\n"
        "Ctrl-C detaches everything.",
        epilog="examples:\n  tuner observe --comm nginx\n  tuner observe --port 8080 --json"
        " --seconds 10\n  tuner observe --pid 1234 --probes sched,syscalls",
    )
    p.add_argument(
        "--pid",
        type=int,
        action="append",
        default=[],
        metavar="P",
        help="observe process P and its threads (repeatable)",
    )
    p.add_argument("--comm", metavar="NAME", help="observe tasks with this command name")
    p.add_argument("--cgroup", metavar="PATH", help="observe tasks in this cgroup v2 directory")
    p.add_argument(
        "--port",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="observe the processes listening on port N when observe starts",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="S",
        help="refresh the table every S seconds (default: %(default)s)",
    )
    p.add_argument(
        "--window-ms",
        type=int,
        default=100,
        metavar="MS",
        help="aggregation window in the kernel, in milliseconds (default: %(default)s)",
    )
    p.add_argument(
        "--latency-sample",
        type=int,
        default=1,
        metavar="N",
        help="syscalls probe: time one in N calls at random and scale (a power of two; "
        "calls and errors stay exact; larger N costs a busy process less; default: %(default)s)",
    )
    p.add_argument("--seconds", type=float, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--probes",
        default="sched,syscalls,net",
        metavar="LIST",
        help="comma-separated probes to attach (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per frame")
    p.add_argument("--ebpf", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=_run_observe)


def _run_observe(args: argparse.Namespace) -> int:
    from tuner.observe import run_observe

    return run_observe(args)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        formatter_class=_formatter,
        help="measure the tuner's own costs",
        description="Benchmarks that measure their variants side by side in one run and\n"
        "report ratios (the machine may be shared and noisy).",
        epilog="examples:\n  tuner bench overhead\n  tuner bench steer --json",
    )
    bench = p.add_subparsers(title="benchmarks", metavar="<benchmark>")
    o = bench.add_parser(
        "overhead",
        formatter_class=_formatter,
        help="throughput of syscall-, context-switch- and TCP-heavy workloads, bare vs probed",
        description="Run a getppid(2) loop, a pipe ping-pong and a TCP ping-pong on loopback\n"
        "(64-byte messages; both ping-pongs are two processes on one CPU), each bare,\n"
        "with empty programs on raw_syscalls sys_enter/sys_exit alone (sysfloor) and\n"
        "on all the probes' attach points (floor: what no probe there can undercut),\n"
        "with all probes observing them, and (getppid) with the syscall probe timing\n"
        "one call in 16; arms rotate each round. Prints each throughput ratio to bare,\n"
        "raw events per second seen in the kernel, summary records delivered, and\n"
        "records lost.",
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
        formatter_class=_formatter,
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
        formatter_class=_formatter,
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
    tr = bench.add_parser(
        "train",
        formatter_class=_formatter,
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
    p.set_defaults(func=lambda _args: p.print_help() or 2)


def _run_bench_overhead(args: argparse.Namespace) -> int:
    require_root("tuner bench overhead")
    from tuner.bench import overhead

    result = overhead.run(args.seconds, args.rounds, progress=overhead.progress_line)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(json.dumps(result, indent=2) if args.json else overhead.render(result))
    return 0


def _add_cleanup(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cleanup",
        formatter_class=_formatter,
        help="remove what a crashed tuner left attached or pinned in the kernel",
        description="Detach steering programs noted in /run/tuner and remove the maps pinned\n"
        "under /sys/fs/bpf/tuner. Safe to run at any time; a running tuner's\n"
        "steering is removed too.",
        epilog="examples:\n  tuner cleanup",
    )
    p.set_defaults(func=_run_cleanup)


def _run_cleanup(args: argparse.Namespace) -> int:
    require_root("tuner cleanup")
    from tuner.actuate.cleanup import cleanup

    done = cleanup()
    print("\n".join(done) if done else "cleanup: nothing to remove")
    return 0


def _run_bench_loop(args: argparse.Namespace) -> int:
    require_root("tuner bench loop")
    from tuner.bench import loop

    result = loop.run(args.windows)
    print(json.dumps(result, indent=2) if args.json else loop.render(result))
    return 0


def _run_bench_train(args: argparse.Namespace) -> int:
    from tuner.learn.train import bench

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


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="tuner",
        description=DESCRIPTION,
        formatter_class=_formatter,
        epilog="examples:\n  tuner doctor\n  tuner <command> --help",
    )
    parser.add_argument("--version", action="version", version=f"tuner {__version__}")
    parser.add_argument("--debug", action="store_true", help="on error, print the full traceback")
    sub = parser.add_subparsers(title="commands", metavar="<command>")
    for add in (_add_doctor, _add_observe, _add_bench, _add_cleanup):
        add(sub)
    from tuner.agent import cli as agent_cli

    agent_cli.register(sub, _formatter)
    from tuner.experiment import cli as experiment_cli

    experiment_cli.register(sub, _formatter)
    from tuner.trace import cli as trace_cli

    trace_cli.register(sub, _formatter)
    from tuner.group import cli as group_cli

    group_cli.register(sub, _formatter)
    return parser


def _terminate_for(owner: int) -> Callable[[int, object], None]:
    """A SIGTERM handler for process ``owner``: SIGTERM unwinds like Ctrl-C, so that every
    context manager detaches what it attached.

    A fork that did not exec inherits the handler. pyroute2 forks such a helper for every
    netlink socket it opens in a namespace and SIGTERMs it when done; unwinding there ran the
    parent's clean-up in the child, which deleted a cluster namespace under the running
    experiment. In any process but ``owner`` the handler exits at once instead.

    >>> handler = _terminate_for(os.getpid())
    >>> try:
    ...     handler(signal.SIGTERM, None)
    ... except KeyboardInterrupt:
    ...     print("unwinds")
    unwinds
    """

    def _terminate(signum: int, _frame: object) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)
        raise KeyboardInterrupt

    return _terminate


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    signal.signal(signal.SIGTERM, _terminate_for(os.getpid()))
    try:
        return int(args.func(args) or 0)
    except TunerError as e:
        if args.debug:
            traceback.print_exc()
        print(f"tuner: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tuner: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and friends
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
