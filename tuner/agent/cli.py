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
        f"shadow      {sh['decisions']} decisions scored; hotspot precision"
        f" {sh['hotspot_precision']} recall {sh['hotspot_recall']};"
        f" gap to balanced {sh['mean_gap_to_balanced']}",
        f"last        {last.get('mode', '-')} written={last.get('written', '-')}: "
        f"{last.get('why', '-')}",
        f"guard       {reply['guard']}",
        f"loop        p50 {reply['loop_ms_p50']} ms  p99 {reply['loop_ms_p99']} ms;"
        f" records lost {reply['records_lost']}",
    ]
    return "\n".join(lines)
