"""``tuner observe``: a live table (or JSON lines) of what the probes see, per entity.

>>> from tuner.probes.base import Frame
>>> f = Frame("sched", "task:7", 0, 100_000_000, {"oncpu_ns": 50e6, "runq_wait_ns": 1e6,
...           "switches_vol": 3, "switches_invol": 1}, {"comm": "nginx"})
>>> row = Summary(1.0).add([f]).rows()[0]
>>> row["entity"], row["cpu%"], row["runq_ms"], row["switches"]
('task:7', 5.0, 1.0, 4.0)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import asdict
from typing import Any, TextIO

from tuner.probes.base import Frame, ProbeStats
from tuner.probes.config import MAX_SLOTS, ProbeConfig

COLUMNS = (
    ("entity", 20),
    ("comm", 10),
    ("cpu%", 6),
    ("runq_ms", 7),
    ("switches", 8),
    ("syscalls", 8),
    ("KB_in", 7),
    ("KB_out", 7),
)


class Summary:
    """Sums frames over one display interval of ``seconds`` into per-entity table rows."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._rows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._comm: dict[str, str] = {}

    def add(self, frames: list[Frame]) -> Summary:
        for f in frames:
            r = self._rows[f.entity]
            g = f.features.get
            r["cpu%"] += g("oncpu_ns", 0.0) / (self.seconds * 1e9) * 100
            r["runq_ms"] += g("runq_wait_ns", 0.0) / 1e6
            r["switches"] += g("switches_vol", 0.0) + g("switches_invol", 0.0)
            r["syscalls"] += g("calls", 0.0)
            r["KB_in"] += g("bytes_in", 0.0) / 1024
            r["KB_out"] += g("bytes_out", 0.0) / 1024
            if "comm" in f.labels:
                self._comm[f.entity] = f.labels["comm"]
        return self

    def rows(self, limit: int = 20) -> list[dict]:
        def busy(item: tuple[str, dict[str, float]]) -> float:
            return item[1]["cpu%"] + item[1]["syscalls"] / 1e3 + item[1]["KB_in"] / 1e3

        out = []
        for entity, r in sorted(self._rows.items(), key=busy, reverse=True)[:limit]:
            row: dict = {"entity": entity, "comm": self._comm.get(entity, "")}
            row.update({k: round(v, 1) for k, v in r.items()})
            out.append(row)
        return out


def render(rows: list[dict], header: str) -> str:
    """Format rows as a table of at most 80 columns (long entity names are cut)."""
    lines = [
        header,
        " ".join(
            f"{name:>{w}}" if i > 1 else f"{name:<{w}}" for i, (name, w) in enumerate(COLUMNS)
        )[:80],
    ]
    for r in rows:
        cells = []
        for i, (name, w) in enumerate(COLUMNS):
            v = r.get(name, "")
            cells.append(f"{str(v)[:w]:<{w}}" if i < 2 else f"{v:>{w}}")
        lines.append(" ".join(cells)[:80])
    return "\n".join(lines)


def write_json(frames: list[Frame], out: TextIO = sys.stdout) -> None:
    """One JSON object per frame and line."""
    for f in frames:
        out.write(json.dumps(asdict(f)) + "\n")
    out.flush()


def run_observe(args) -> int:
    """The ``tuner observe`` command (see ``tuner observe --help``)."""
    import time

    from tuner.errors import TunerError
    from tuner.probes.stream import PROBES, FeatureStream
    from tuner.system import require_root

    names = [n.strip() for n in args.probes.split(",") if n.strip()]
    if not args.ebpf:
        require_root("tuner observe")
    if args.ebpf:
        for n in names:
            probe = PROBES[n]()
            defines = probe.kernel_defines()
            print(f"/* compiled with, for this kernel: {' '.join(defines)} */")
            print(probe.source())
        return 0
    pids = list(args.pid)
    for port in args.port:
        found, how = port_pids(port, args.netns)
        print(f"tuner: port {port}: {how}", file=sys.stderr)
        pids.extend(found)
    if args.interval <= 0:
        raise TunerError(f"--interval must be > 0 seconds, got {args.interval}")
    cfg = ProbeConfig(
        window_ms=args.window_ms,
        pids=tuple(pids),
        comm=args.comm,
        cgroup=args.cgroup,
        latency_sample=args.latency_sample,
        max_entities=args.max_entities,
        syscall_classes=tuple(c.strip() for c in args.syscall_classes.split(",") if c.strip()),
        syscall_duty=args.syscall_duty,
    ).validate()
    what = (
        ", ".join(f"pid {p}" for p in pids)
        or (args.comm and f"comm {args.comm}")
        or (args.cgroup and f"cgroup {args.cgroup}")
        or "all processes"
    )
    print(f"tuner: tracing {what} with probes {', '.join(names)}; Ctrl-C to stop", file=sys.stderr)
    with FeatureStream(cfg, names) as stream:
        summary, shown = Summary(args.interval), time.monotonic()
        try:
            for window in stream.windows(args.seconds):
                if args.json:
                    write_json(window.frames)
                    continue
                summary.add(window.frames)
                if time.monotonic() - shown >= args.interval:
                    header = time.strftime("%H:%M:%S") + "  " + counts(stream.stats())
                    print(render(summary.rows(), header) + "\n", flush=True)
                    summary, shown = Summary(args.interval), time.monotonic()
        except KeyboardInterrupt:
            pass
        stats = stream.stats()
    print(
        "tuner: detached; "
        + "; ".join(
            f"{n}: {s.events} events, {s.records} records, {s.lost} lost, {s.overflow} refused"
            for n, s in stats.items()
        ),
        file=sys.stderr,
    )
    return 0


def port_pids(port: int, netns: str | None = None) -> tuple[list[int], str]:
    """The processes ``--port`` observes, and a line that says which: the workers of the
    port's reuseport group (group discovery, TCP then UDP, in network namespace ``netns``,
    an ``ip netns`` name, or this one: a master that serves no socket is left out), else,
    in this namespace, every process holding a listening socket on it (one socket shared by
    all workers is no group).

    >>> port_pids(1)
    Traceback (most recent call last):
    ...
    tuner.errors.TunerError: no process listens on port 1; fix: start the server first, or \
check the port with `ss -ltnp`
    """
    from tuner.errors import TunerError
    from tuner.group import discover
    from tuner.netns import netns_link
    from tuner.probes.stream import pids_listening_on

    link = netns_link(netns) if netns else None
    problems = []
    for protocol in ("tcp", "udp"):
        try:
            g = discover(port, protocol, link)
        except TunerError as e:
            problems.append(e.problem)
            continue
        pids = sorted({w.pid for w in g.workers})
        if len(g.sockets) == 1:
            return pids, f"one {protocol} socket; observing its holder {pids[0]}"
        if g.shape == "threads":
            tids = ", ".join(str(w.tid) for w in g.workers)
            return pids, (
                f"reuseport group over {protocol}, {len(g.sockets)} sockets served by threads "
                f"{tids}; observing process {', '.join(map(str, pids))} (`tuner group {port}` "
                "shows the map)"
            )
        return pids, (
            f"{g.shape} reuseport group over {protocol}, {len(g.sockets)} sockets; observing "
            f"its workers {', '.join(map(str, pids))} (`tuner group {port}` shows the map)"
        )
    if netns:  # the problem of a protocol something listens on, if any
        telling = next((p for p in problems if not p.startswith("no process")), problems[0])
        raise TunerError(
            f"no reuseport group on port {port} in network namespace {netns}: {telling}",
            "name the server's processes with --pid",
        )
    pids = pids_listening_on(port)
    if not pids:
        raise TunerError(
            f"no process listens on port {port}",
            "start the server first, or check the port with `ss -ltnp`",
        )
    return pids, f"no reuseport group; observing its holders {', '.join(map(str, pids))}"


def counts(stats: dict[str, ProbeStats]) -> str:
    """The table's header: records lost, and entities refused (no slot free) by probe.

    >>> counts({"sched": ProbeStats(9, 9, 0, 40, 3), "net": ProbeStats(9, 9, 2, 0, 3)})
    'records lost: 2  refused (no slot; --max-entities): sched 40'
    >>> counts({"sched": ProbeStats(9, 9, 0, 0, 3)})
    'records lost: 0'
    """
    lost = sum(s.lost for s in stats.values())
    refused = ", ".join(f"{n} {s.overflow}" for n, s in stats.items() if s.overflow)
    if not refused:
        return f"records lost: {lost}"
    return f"records lost: {lost}  refused (no slot; --max-entities): {refused}"


def register(sub: argparse._SubParsersAction, formatter: Any) -> None:
    """Add ``tuner observe`` to the command line."""
    p = sub.add_parser(
        "observe",
        formatter_class=formatter,
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
        help="observe the workers of port N's reuseport group when observe starts (as "
        "`tuner group N` finds them: not a master that serves no socket), else the processes "
        "listening on it",
    )
    p.add_argument(
        "--netns",
        metavar="NAME",
        help="look --port up in this network namespace (an `ip netns` name; the probes see "
        "every namespace's tasks). Run observe itself outside it: `ip netns exec` hides "
        "tracefs",
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
        "--max-entities",
        type=int,
        default=ProbeConfig.max_entities,
        metavar="N",
        help=f"tasks, processes, sockets each probe follows at once (at most {MAX_SLOTS}); "
        "more are refused: not observed, counted in the header (default: %(default)s)",
    )
    p.add_argument(
        "--latency-sample",
        type=int,
        default=1,
        metavar="N",
        help="syscalls probe: time one in N calls at random and scale (a power of two; "
        "calls and errors stay exact; larger N costs a busy process less; default: %(default)s)",
    )
    p.add_argument(
        "--syscall-classes",
        default="",
        metavar="LIST",
        help="syscalls probe: count only these classes (of other, net, file, poll, mem); "
        "the rest are dropped by the probe's first instructions (default: all)",
    )
    p.add_argument(
        "--syscall-duty",
        type=float,
        default=1.0,
        metavar="F",
        help="syscalls probe: attached for this fraction of each second, detached (no cost "
        "to any syscall on the host) for the rest; figures are scaled up (default: 1)",
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
    p.set_defaults(func=run_observe)
