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
        description="Test clusters are network namespaces named tnr-<tag>-<host> (an\n"
        "experiment's tag is its spec's cluster.tag, or random). They are removed\n"
        "when an experiment ends; `down` removes any a crash left behind, with every\n"
        "process inside them: all of them, or those of the tags named.",
        epilog="examples:\n  tuner cluster list\n  tuner cluster down\n"
        "  tuner cluster down nightly",
    )
    csub = c.add_subparsers(title="commands", metavar="<command>")
    csub.add_parser("list", help="list cluster namespaces").set_defaults(func=_cluster_list)
    down = csub.add_parser("down", help="remove every cluster namespace, or those of TAG")
    down.add_argument("tags", nargs="*", metavar="TAG", help="only the clusters tagged TAG")
    down.set_defaults(func=_cluster_down)
    c.set_defaults(func=lambda _a: c.print_help() or 2)


def _cluster_list(args: argparse.Namespace) -> int:
    from tuner.cluster import leftovers

    names = leftovers()
    print("\n".join(names) if names else "no cluster namespaces")
    return 0


def _cluster_down(args: argparse.Namespace) -> int:
    from tuner.cluster import down_all

    removed = down_all(tags=args.tags)
    tagged = f" tagged {', '.join(args.tags)}" if args.tags else ""
    print(
        "\n".join(f"removed {n}" for n in removed) if removed else f"no cluster namespaces{tagged}"
    )
    return 0
