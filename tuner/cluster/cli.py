"""``tuner cluster list|down``: test-cluster namespaces left behind by a crashed run.

>>> import argparse
>>> p = argparse.ArgumentParser(); sub = p.add_subparsers()
>>> register(sub, argparse.HelpFormatter)
>>> p.parse_args(["cluster", "list"]).func.__name__
'_cluster_list'
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction, formatter: Any) -> None:
    """Add ``tuner cluster`` to the command line."""
    c = sub.add_parser(
        "cluster",
        formatter_class=formatter,
        help="list or remove test-cluster namespaces (tnr-*) left behind",
        description="Test clusters are network namespaces named tnr-<tag>-<host>. They are\n"
        "removed when an experiment ends; `down` removes any a crash left behind,\n"
        "with every process inside them.",
        epilog="examples:\n  tuner cluster list\n  tuner cluster down",
    )
    csub = c.add_subparsers(title="commands", metavar="<command>")
    csub.add_parser("list", help="list cluster namespaces").set_defaults(func=_cluster_list)
    csub.add_parser("down", help="remove every cluster namespace").set_defaults(func=_cluster_down)
    c.set_defaults(func=lambda _a: c.print_help() or 2)


def _cluster_list(args: argparse.Namespace) -> int:
    from tuner.cluster import leftovers

    names = leftovers()
    print("\n".join(names) if names else "no cluster namespaces")
    return 0


def _cluster_down(args: argparse.Namespace) -> int:
    from tuner.cluster import down_all

    removed = down_all()
    print("\n".join(f"removed {n}" for n in removed) if removed else "no cluster namespaces")
    return 0
