"""``tuner group PORT``: show the reuseport group on a port and who serves each socket.

>>> import argparse
>>> p = argparse.ArgumentParser(); sub = p.add_subparsers()
>>> register(sub, argparse.HelpFormatter)
>>> a = p.parse_args(["group", "8080", "--udp", "--netns", "web"])
>>> a.port, a.udp, a.netns
(8080, True, 'web')
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any


def register(sub: argparse._SubParsersAction, formatter: Any) -> None:
    p = sub.add_parser(
        "group",
        formatter_class=formatter,
        help="show a port's reuseport group: each socket and the worker that serves it",
        description="Find the SO_REUSEPORT group on PORT and, for each socket, the process\n"
        "or thread that serves it: the one that holds it alone, the one process\n"
        "whose event loop watches it (nginx-style pre-fork servers), or the one\n"
        "thread blocked on it (thread-per-core servers). The table's order is the\n"
        "target order `tuner run` steers by. See docs/real-servers.md.",
        epilog="examples:\n  tuner group 8080\n  tuner group 53 --udp --netns dns\n"
        "  tuner group 8080 --json",
    )
    p.add_argument("port", type=int, metavar="PORT", help="the port of the group")
    p.add_argument("--udp", action="store_true", help="a UDP group (default: TCP)")
    p.add_argument("--netns", metavar="NAME", help="network namespace (an `ip netns` name)")
    p.add_argument("--address", metavar="ADDR", help="local address, when there are several")
    p.add_argument("--json", action="store_true", help="print the map as one JSON object")
    p.add_argument(
        "--record",
        metavar="FILE",
        help="also save what was read from /proc as a JSON fixture (for tests and bug reports)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from tuner.errors import TunerError
    from tuner.group import discover
    from tuner.group.discover import holder_pids
    from tuner.netns import netns_link
    from tuner.system import require_root

    if not 1 <= args.port <= 65535:
        raise TunerError(f"PORT must be 1 to 65535; got {args.port}")
    require_root("tuner group")
    link = netns_link(args.netns) if args.netns else None
    proto = "udp" if args.udp else "tcp"
    try:
        group = discover(args.port, proto, link, args.address)
    except TunerError:
        if args.record:  # what a bug report needs most: what was read when no map was made
            pids = holder_pids(args.port, proto, link, args.address)
            if pids:
                _record(args.record, pids, args.port, proto)
                print(f"tuner group: what was read from /proc is in {args.record}",
                      file=sys.stderr)  # fmt: skip
            else:  # a record is what /proc shows of the holders: there is none to show
                print("tuner group: no process holds the sockets; nothing recorded",
                      file=sys.stderr)  # fmt: skip
        raise
    if args.record:
        _record(args.record, sorted({p for s in group.sockets for p, _ in s.holders}), args.port,
                proto)  # fmt: skip
    if args.json:
        print(json.dumps(asdict(group)))
    else:
        print(group.explain())
    return 0


def _record(path: str, holders: list[int], port: int, protocol: str) -> None:
    """Save what ``/proc`` shows of ``holders`` as a fixture for :class:`RecordedProc`."""
    from tuner.group.procfs import LiveProc, record

    proc = LiveProc()
    data = record(proc, holders)
    data.update(port=port, protocol=protocol, netns=proc.readlink(f"{holders[0]}/ns/net"))
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
