"""Subcommands for traces: ``tuner record``, ``replay``, ``train``, ``evaluate``.

>>> import argparse
>>> p = argparse.ArgumentParser(); sub = p.add_subparsers()
>>> register(sub, argparse.HelpFormatter)
>>> a = p.parse_args(["train", "--trace", "a.parquet", "b.parquet", "--out", "models/x"])
>>> a.trace, a.holdout
(['a.parquet', 'b.parquet'], 0.2)
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: argparse._SubParsersAction, formatter: Any) -> None:
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
        "  tuner record --out t.parquet --pid 4242 --pid 4243 --window-ms 50",
    )
    r.add_argument("--out", required=True, metavar="FILE", help="trace to write (a new path)")
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

    p = sub.add_parser(
        "replay",
        formatter_class=formatter,
        help="feed a trace through the agent's learner and policy (no kernel needed)",
        description="Replay every window of a trace through the same learner and policy code\n"
        "the live agent runs, with the configuration recorded in the trace (or the\n"
        "model given), and report prediction error and decisions. With the recorded\n"
        "configuration the replayed predictions reproduce the recorded ones.",
        epilog="examples:\n  tuner replay traces/web.parquet\n"
        "  tuner replay traces/web.parquet --model models/web --log replayed.jsonl",
    )
    p.add_argument("trace", metavar="FILE", help="a trace written by tuner record / run --record")
    p.add_argument("--model", metavar="KIND|DIR", help="a model kind or a `tuner train` directory")
    p.add_argument("--log", metavar="FILE", help="write the replayed decisions as JSON lines")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_replay)

    t = sub.add_parser(
        "train",
        formatter_class=formatter,
        help="train a model offline from traces (scikit-learn), save it for `tuner run --model`",
        description="Build the agent's features from the traces, split each trace by time\n"
        "(the last --holdout fraction of its windows is never trained on), fit gradient\n"
        "boosted trees to the change of load, warm-start the online river model by\n"
        "replaying the end of the training period, and save the model as JSON and\n"
        "numpy arrays (nothing that runs code on load) with its feature schema,\n"
        "training period and held-out metrics.",
        epilog="examples:\n  tuner train --trace traces/web.parquet --out models/web\n"
        "  tuner train --trace a.parquet b.parquet --out models/ab --max-iter 400 --json",
    )
    t.add_argument("--trace", nargs="+", required=True, metavar="FILE", help="one or more traces")
    t.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    t.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        metavar="F",
        help="fraction of each trace's windows held out (default: %(default)s)",
    )
    t.add_argument(
        "--max-iter",
        type=int,
        default=200,
        metavar="N",
        help="boosting iterations (default: %(default)s)",
    )
    t.add_argument("--json", action="store_true", help="print the model's metadata as JSON")
    t.set_defaults(func=_train)

    e = sub.add_parser(
        "evaluate",
        formatter_class=formatter,
        help="score a saved model on a trace against the last-value baseline, with plots",
        description="Prediction error (MAE, hotspot precision / recall) of the saved model\n"
        "and of the last value on the trace's windows (only the held-out ones if the\n"
        "model was trained on this trace), and the decisions the policy would have\n"
        "taken with each (counterfactual), as a table and PNG plots.",
        epilog="examples:\n  tuner evaluate --trace traces/web.parquet --model models/web\n"
        "  tuner evaluate --trace t.parquet --model models/web --out eval/ --json",
    )
    e.add_argument("--trace", required=True, metavar="FILE", help="a trace")
    e.add_argument("--model", required=True, metavar="DIR", help="a `tuner train` directory")
    e.add_argument("--out", metavar="DIR", help="write predictions.png, error_cdf.png, shares.png")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_evaluate)


def _check_positive(name: str, value: float | None) -> None:
    from tuner.errors import TunerError

    if value is not None and value <= 0:
        raise TunerError(f"{name} must be > 0; got {value}")


def _record(args: argparse.Namespace) -> int:
    from tuner.agent.config import AgentConfig
    from tuner.system import require_root
    from tuner.trace.record import find_pids, record

    for name in ("seconds", "part_mb", "part_seconds"):
        _check_positive("--" + name.replace("_", "-"), getattr(args, name))
    config = AgentConfig.load(args.config) if args.config else AgentConfig.from_dict({})
    config = config.with_values(
        agent__window_ms=args.window_ms,
        agent__record_part_mb=args.part_mb,
        agent__record_part_seconds=args.part_seconds,
    )
    require_root("tuner record")
    pids = find_pids(args.pid, args.comm, args.cgroup, args.port, args.netns)
    print(
        f"tuner record: {len(pids)} processes {pids} into {args.out}; Ctrl-C to stop",
        file=sys.stderr,
    )
    w = record(config, pids, args.out, args.seconds)
    print(
        json.dumps({"trace": args.out, "windows": w.windows, "rows": w.rows, "parts": len(w.parts)})
    )
    return 0


def _replay(args: argparse.Namespace) -> int:
    from tuner.agent.config import model_override
    from tuner.trace.reader import read_trace
    from tuner.trace.replay import config_of, replay, write_log

    trace = read_trace(args.trace)
    config = config_of(trace, **model_override(args.model))
    result = replay(trace, config, keep_entries=bool(args.log))
    if args.log:
        write_log(result, args.log)
    s = result.summary()
    if args.json:
        print(json.dumps(s))
        return 0
    print(
        f"replayed {s['windows']} windows x {s['entities']} entities: model MAE"
        f" {s['model_mae']:.4f} vs last value {s['baseline_mae']:.4f};"
        f" {s['decisions']} table changes"
    )
    if s["max_diff_to_recording"] is not None and not args.model:
        print(f"largest difference to the recorded predictions: {s['max_diff_to_recording']:.2e}")
    if trace.skipped:
        print(f"note: skipped {len(trace.skipped)} part(s) still in progress: {trace.skipped[0]}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from tuner.errors import TunerError
    from tuner.learn.train import train

    if not 0 <= args.holdout < 1:
        raise TunerError(f"--holdout must be in [0, 1); got {args.holdout}")
    _check_positive("--max-iter", args.max_iter)
    meta = train(
        args.trace,
        args.out,
        args.holdout,
        args.max_iter,
        progress=lambda msg: print(f"tuner train: {msg}", file=sys.stderr, flush=True),
    )
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    m = meta["metrics"]
    print(f"trained on {m['train_rows']} rows in {m['train_s']} s (fit {m['fit_s']} s)")
    if "holdout_model_mae" in m:
        print(
            f"held out {m['holdout_rows']} rows: MAE {m['holdout_model_mae']:.4f}"
            f" (last value {m['holdout_baseline_mae']:.4f})"
        )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from tuner.learn.evaluate import evaluate, render

    r = evaluate(args.trace, args.model, args.out)
    print(json.dumps(r, indent=2) if args.json else render(r))
    return 0
