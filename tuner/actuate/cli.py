"""``tuner cleanup``: the command that removes what a crashed tuner left in the kernel.

>>> import argparse
>>> p = argparse.ArgumentParser(); sub = p.add_subparsers()
>>> register(sub, argparse.HelpFormatter)
>>> p.parse_args(["cleanup"]).func.__name__
'_run_cleanup'
"""

from __future__ import annotations

import argparse
from typing import Any

from tuner.system import require_root


def register(sub: argparse._SubParsersAction, formatter: Any) -> None:
    """Add ``tuner cleanup`` to the command line."""
    p = sub.add_parser(
        "cleanup",
        formatter_class=formatter,
        help="remove what a crashed tuner left attached or pinned in the kernel",
        description="For every steering noted in /run/tuner whose tuner is not running:\n"
        "detach its program, remove its maps pinned under /sys/fs/bpf/tuner and its\n"
        "stale control socket, and say what was found. A running tuner's name is left\n"
        "alone: stop that tuner (SIGTERM) and it removes its own.",
        epilog="examples:\n  tuner cleanup",
    )
    p.set_defaults(func=_run_cleanup)


def _run_cleanup(args: argparse.Namespace) -> int:
    require_root("tuner cleanup")
    from tuner.actuate.cleanup import cleanup

    done = cleanup()
    print("\n".join(done) if done else "cleanup: nothing to remove")
    return 0
