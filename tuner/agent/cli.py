"""Subcommands of the agent: ``tuner run``, ``tuner mode``, ``tuner status``.

>>> import argparse
>>> p = argparse.ArgumentParser(); sub = p.add_subparsers()
>>> register(sub, argparse.HelpFormatter)
>>> p.parse_args(["run", "--config", "t.toml"]).mode
'shadow'
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

DEFAULT_SOCKET = "/run/tuner/agent.sock"


def register(sub: argparse._SubParsersAction, formatter: Any) -> None:
    p = sub.add_parser(
        "run",
        formatter_class=formatter,
        help="run the agent: learn where hotspots will be and steer away (shadow by default)",
        description="Every window: read the probes, learn from the last window, predict each\n"
        "worker's load, choose an indirection table for the server's SO_REUSEPORT\n"
        "group, then write it (active) or only log it (shadow), and renew the lease.\n"
        "Switch modes at run time with `tuner mode`; see `tuner status`.\n"
        "SIGTERM or Ctrl-C detaches everything and exits 0. The config keys are\n"
        "listed in docs/agent.md.",
        epilog="examples:\n  tuner run --config tuner.toml\n"
        "  tuner run --config tuner.toml --mode active --seconds 60\n"
        "  tuner run --config tuner.toml --record traces/today.parquet\n"
        "  tuner run --config tuner.toml --model models/shifting",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="TOML config (docs/agent.md)")
    p.add_argument(
        "--mode",
        choices=("shadow", "active"),
        default="shadow",
        help="shadow: decide and log only (default); active: write decisions",
    )
    p.add_argument("--seconds", type=float, default=None, metavar="S", help="stop after S s")
    p.add_argument(
        "--model",
        metavar="KIND|DIR",
        help="override the model: a kind (linear, tree, last) or a directory saved by"
        " `tuner train` (its feature schema and window must match)",
    )
    p.add_argument(
        "--record",
        metavar="FILE",
        help="also record a trace (features, predictions, decisions, outcomes) into FILE",
    )
    p.set_defaults(func=_run)

    m = sub.add_parser(
        "mode",
        formatter_class=formatter,
        help="switch a running agent between shadow and active",
        description="Tell the running agent to switch mode. To shadow: writes stop at once\n"
        "and the lease lapses, so the kernel's own placement returns.",
        epilog="examples:\n  tuner mode active\n  tuner mode shadow",
    )
    m.add_argument("mode", choices=("shadow", "active"))
    m.add_argument("--socket", default=DEFAULT_SOCKET, help="control socket (default: %(default)s)")
    m.set_defaults(func=_mode)

    s = sub.add_parser(
        "status",
        formatter_class=formatter,
        help="show a running agent's mode, model error, decisions and loop latency",
        description="Ask the running agent for its state: mode, uptime, entities, last\n"
        "decision, model vs baseline error, shadow scores, records lost, loop latency.",
        epilog="examples:\n  tuner status\n  tuner status --json | jq .mode",
    )
    s.add_argument("--socket", default=DEFAULT_SOCKET, help="control socket (default: %(default)s)")
    s.add_argument("--json", action="store_true", help="print the JSON answer as is")
    s.set_defaults(func=_status)

    r = sub.add_parser(
        "record",
        formatter_class=formatter,
        help="record what the agent sees of a workload into a Parquet trace",
        description="Observe the selected processes with the scheduler probe and run a\n"
        "shadow-mode agent on them (it writes nothing into the kernel). Every window,\n"
        "one row per process goes into FILE: features, the model's predictions, the\n"
        "decision it would take, and the load observed. FILE is a directory of Parquet\n"
        "parts; a part is closed every --part-seconds or --part-mb, so a recording cut\n"
        "by SIGKILL stays readable up to its last closed part. Ctrl-C stops cleanly.\n"
        "The columns are described in docs/traces.md.",
        epilog="examples:\n  tuner record --out traces/web.parquet --port 8080 --seconds 600\n"
        "  tuner record --out t.parquet --pid 4242 --pid 4243 --window-ms 50\n"
        "  tuner record --dataset /srv/traces --port 8080 --seconds 3600",
    )
    dest = r.add_mutually_exclusive_group(required=True)
    dest.add_argument("--out", metavar="FILE", help="trace to write (a new path)")
    dest.add_argument(
        "--dataset",
        metavar="ROOT",
        help="write under ROOT/node=<host>/date=<UTC date>/run=<time>-<pid>/, a dataset of\n"
        "many nodes' recordings that `tuner train --dataset` reads; ROOT is a directory or\n"
        "an object-store URL (s3://bucket/prefix?region=..., uploaded when the recording ends)",
    )
    r.add_argument(
        "--node", metavar="NAME", help="node name in the dataset (default: this host's name)"
    )
    r.add_argument("--pid", type=int, action="append", default=[], metavar="P", help="a process")
    r.add_argument("--comm", metavar="NAME", help="processes with this command name")
    r.add_argument("--cgroup", metavar="PATH", help="processes of this cgroup v2 directory")
    r.add_argument(
        "--port",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="processes listening on this port",
    )
    r.add_argument("--netns", metavar="NAME", help="look the port up in this network namespace")
    r.add_argument("--seconds", type=float, metavar="S", help="stop after S seconds")
    r.add_argument(
        "--window-ms",
        type=int,
        default=100,
        metavar="MS",
        help="window length (default: %(default)s)",
    )
    r.add_argument("--config", metavar="FILE", help="agent config for the model and policy")
    r.add_argument(
        "--part-mb",
        type=float,
        default=64.0,
        metavar="MB",
        help="close a part at this size (default: %(default)s)",
    )
    r.add_argument(
        "--part-seconds",
        type=float,
        default=30.0,
        metavar="S",
        help="close a part after this long (default: %(default)s)",
    )
    r.set_defaults(func=_record)


def _run(args: argparse.Namespace) -> int:
    from tuner.agent.config import AgentConfig, model_override
    from tuner.agent.run import main_loop_banner, run_agent
    from tuner.system import require_root

    require_root("tuner run")
    config = AgentConfig.load(args.config)
    config = config.with_values(**model_override(args.model))
    if args.record:
        config = config.with_values(agent__record=args.record)
    agent = run_agent(config, args.mode, args.seconds, progress=main_loop_banner)
    print("tuner run: stopped; steering detached", file=sys.stderr)
    print(json.dumps(agent.status()))
    return 0


def _record(args: argparse.Namespace) -> int:
    from tuner.agent.config import AgentConfig
    from tuner.agent.record import find_pids, record
    from tuner.errors import TunerError
    from tuner.schema import check_positive
    from tuner.system import require_root

    check_positive("--seconds", args.seconds)
    check_positive("--part-mb", args.part_mb)
    check_positive("--part-seconds", args.part_seconds)
    config = AgentConfig.load(args.config) if args.config else AgentConfig.from_dict({})
    config = config.with_values(
        agent__window_ms=args.window_ms,
        agent__record_part_mb=args.part_mb,
        agent__record_part_seconds=args.part_seconds,
    )
    if args.node and not args.dataset:
        raise TunerError("--node names a node of a --dataset", "add --dataset ROOT, or drop --node")
    from tuner.trace import store

    rel = ""
    if args.dataset:
        import socket
        import time

        from tuner.trace.dataset import dataset_rel

        rel = dataset_rel(args.node or socket.gethostname(), time.time(), os.getpid())
        if store.is_url(args.dataset):  # spooled here, uploaded when the recording ends
            store.check(args.dataset)
            args.out = os.path.join(store.SPOOL, rel)
        else:
            args.out = os.path.join(args.dataset, rel)
    require_root("tuner record")
    pids = find_pids(args.pid, args.comm, args.cgroup, args.port, args.netns)
    print(
        f"tuner record: {len(pids)} processes {pids} into {args.out}; Ctrl-C to stop",
        file=sys.stderr,
    )
    w = record(config, pids, args.out, args.seconds)
    trace = args.out
    if args.dataset and store.is_url(args.dataset):
        store.upload(args.out, args.dataset, rel)
        trace = store.join(args.dataset, rel)
    print(json.dumps({"trace": trace, "windows": w.windows, "rows": w.rows, "parts": len(w.parts)}))
    return 0


def _ask(socket_path: str, msg: dict[str, Any]) -> dict[str, Any]:
    from tuner.agent.control import request
    from tuner.errors import TunerError

    reply = request(socket_path, msg)
    if not reply.get("ok"):
        raise TunerError(f"the agent refused: {reply.get('error')}")
    return reply


def _mode(args: argparse.Namespace) -> int:
    reply = _ask(args.socket, {"cmd": "mode", "mode": args.mode})
    print(f"agent is now in {reply['mode']} mode")
    return 0


def _status(args: argparse.Namespace) -> int:
    reply = _ask(args.socket, {"cmd": "status"})
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    try:
        print(_status_text(reply))
    except (KeyError, TypeError, AttributeError) as e:
        from tuner.errors import TunerError

        raise TunerError(
            f"{args.socket} answered a status without {e} (not this version's agent?)",
            "use `tuner status --json` to see the answer as it came",
        ) from None
    return 0


def _hotspot_line(sc: dict[str, Any]) -> str:
    """Hotspot calls of the model against the last value's, next window and horizon.

    >>> _hotspot_line({"model_precision": 0.9, "model_recall": None,
    ...                "baseline_precision": 0.5, "baseline_recall": 0.5})
    'hotspots    next window: precision 0.9 recall - (last value 0.5 / 0.5)'
    """

    def pr(prefix: str) -> str:
        p, r = sc.get(prefix + "model_precision"), sc.get(prefix + "model_recall")
        bp, br = sc.get(prefix + "baseline_precision"), sc.get(prefix + "baseline_recall")
        show = lambda v: "-" if v is None else v  # noqa: E731
        return (f"precision {show(p)} recall {show(r)} "
                f"(last value {show(bp)} / {show(br)})")  # fmt: skip

    line = f"hotspots    next window: {pr('')}"
    if "horizon_model_mae" in sc:
        line += f"; horizon: {pr('horizon_')}"
    return line


def _status_text(reply: dict[str, Any]) -> str:
    """A running agent's status, one line per topic."""
    sh = reply["shadow"]
    last = reply.get("last_decision") or {}
    lines = [
        f"mode        {reply['mode']}  (up {reply['uptime_s']} s, {reply['windows']} windows)",
        f"workers     {reply['entities']}  pids {reply['pids']}"
        + (
            f"; {reply['sockets']} connections followed" if reply.get("sockets") is not None else ""
        ),
        f"model       {reply['model']}: MAE {reply['model_mae_recent']}"
        f"  (last-value baseline {reply['baseline_mae_recent']})",
        _hotspot_line(reply["scores"]),
        f"shadow      {sh['decisions']} decisions scored; hotspot precision"
        f" {sh['hotspot_precision']} recall {sh['hotspot_recall']};"
        f" gap to balanced {sh['mean_gap_to_balanced']}",
        f"last        {last.get('mode', '-')} written={last.get('written', '-')}: "
        f"{last.get('why', '-')}",
        f"guard       {reply['guard']}",
        f"loop        p50 {reply['loop_ms_p50']} ms  p99 {reply['loop_ms_p99']} ms;"
        f" records lost {reply['records_lost']}; refused"
        f" {', '.join(f'{p} {n}' for p, n in reply['refused'].items()) or '-'}",
        *(_placed_line(ch, p) for ch, p in reply.get("placed", {}).items()),
    ]
    c = reply.get("clients")
    if c:
        lines.insert(3, f"clients     {c['followed']} followed, {c['heavy']} heavy; MAE {c['mae']}"
                        f"  (one cost for all: {c['baseline_mae']})")  # fmt: skip
    return "\n".join(lines)


def _placed_line(channel: str, p: dict[str, Any]) -> str:
    """One steered channel's placement counts for ``tuner status``.

    >>> _placed_line("workers", {"by_target": [30, 10], "kernel": {"no_lease": 5}})
    'placed      workers: 40 by the table (per target 30, 10); 5 by the kernel (no_lease 5)'
    """
    by = p["by_target"]
    why = ", ".join(f"{k} {n}" for k, n in p["kernel"].items()) or "-"
    return (
        f"placed      {channel}: {sum(by)} by the table (per target {', '.join(map(str, by))});"
        f" {sum(p['kernel'].values())} by the kernel ({why})"
    )
