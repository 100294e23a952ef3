"""The ``tuner`` command line: one subcommand per job, errors as one line, ``--debug`` for more.

Each subcommand is registered by the package that owns it (``<package>.cli.register``; this
module registers ``doctor``); this module only builds the parser and reports errors.

>>> from tuner.cli import build_parser
>>> build_parser().parse_args(["doctor", "--json"]).json
True
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence

from tuner import __version__, observe
from tuner.actuate import cli as actuate_cli
from tuner.agent import cli as agent_cli
from tuner.bench import cli as bench_cli
from tuner.cluster import cli as cluster_cli
from tuner.errors import TunerError
from tuner.experiment import cli as experiment_cli
from tuner.group import cli as group_cli
from tuner.offline import cli as offline_cli

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
    _add_doctor(sub)
    for module in (
        observe,
        agent_cli,
        group_cli,
        offline_cli,
        experiment_cli,
        cluster_cli,
        bench_cli,
        actuate_cli,
    ):
        module.register(sub, _formatter)  # each package registers the verbs it owns
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


def _stacks_on_sigusr1() -> None:
    """``kill -USR1 <pid>``: every thread's stack to the process's stderr (file descriptor 2,
    whatever ``sys.stderr`` was replaced by), for a command that seems stuck; it carries on.
    Where there is no such descriptor, nothing.

    >>> _stacks_on_sigusr1()
    """
    try:
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    except (AttributeError, ValueError, OSError):  # no stderr, or one without a descriptor
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    signal.signal(signal.SIGTERM, _terminate_for(os.getpid()))
    _stacks_on_sigusr1()
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
