"""Subcommands that work on recorded traces, offline: ``tuner replay``, ``train``,
``evaluate`` (``tuner record`` is the agent's: :mod:`tuner.agent.cli`).

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
    """Add ``tuner replay``, ``train`` and ``evaluate`` to the command line."""
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
        "  tuner train --trace a.parquet b.parquet --out models/ab --max-iter 400 --json\n"
        "  tuner train --dataset /srv/traces --out models/fleet --sample-rows 2000000\n\n"
        "--dataset reads a fleet's traces (ROOT/node=<n>/date=<d>/run=<r>/, as written by\n"
        "`tuner record --dataset`) one recording at a time, keeps an equal sample of rows\n"
        "from every node, and reports the held-out error per node beside the fleet's.",
    )
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--trace", nargs="+", metavar="FILE", help="one or more traces")
    src.add_argument(
        "--dataset",
        metavar="ROOT",
        help="a partitioned dataset of nodes' traces: a directory or an object-store URL "
        "(s3://bucket/prefix?region=...)",
    )
    t.add_argument(
        "--sample-rows",
        type=int,
        default=2_000_000,
        metavar="N",
        help="with --dataset: rows kept in memory, split equally between nodes "
        "(default: %(default)s)",
    )
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
        "  tuner evaluate --trace t.parquet --model models/web --out eval/ --json\n"
        "  tuner evaluate --dataset /srv/traces --model models/fleet",
    )
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--trace", metavar="FILE", help="a trace")
    src.add_argument(
        "--dataset",
        metavar="ROOT",
        help="a partitioned dataset (directory or object-store URL): MAE and hotspot scores "
        "per node",
    )
    e.add_argument("--model", required=True, metavar="DIR", help="a `tuner train` directory")
    e.add_argument("--out", metavar="DIR", help="write predictions.png, error_cdf.png, shares.png")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_evaluate)


def _replay(args: argparse.Namespace) -> int:
    from tuner.agent.config import model_override
    from tuner.offline.replay import config_of, replay, write_log
    from tuner.trace.reader import read_trace

    trace = read_trace(args.trace)
    config = config_of(trace, **model_override(args.model))
    result = replay(trace, config, keep=bool(args.log))
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
    from tuner.offline.train import train
    from tuner.schema import check_positive

    if not 0 <= args.holdout < 1:
        raise TunerError(f"--holdout must be in [0, 1); got {args.holdout}")
    check_positive("--max-iter", args.max_iter)
    say = _progress("tuner train")
    if args.dataset:
        from tuner.offline.fleet import train_dataset

        check_positive("--sample-rows", args.sample_rows)
        meta = train_dataset(
            args.dataset, args.out, args.sample_rows, args.holdout, args.max_iter, progress=say
        )
        m = meta["metrics"]
        fleet = {"rows": m["holdout_rows"], "model_mae": m.get("holdout_model_mae"),
                 "baseline_mae": m.get("holdout_baseline_mae")}  # fmt: skip
        print(json.dumps(meta, indent=2) if args.json else _per_node_text(meta["per_node"], fleet))
        return 0
    meta = train(
        args.trace,
        args.out,
        args.holdout,
        args.max_iter,
        progress=say,
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


def _progress(command: str):
    """Progress lines on stderr, prefixed by the command."""

    def say(msg: str) -> None:
        print(f"{command}: {msg}", file=sys.stderr, flush=True)

    return say


def _per_node_text(per_node: dict[str, dict[str, Any]], fleet: dict | None = None) -> str:
    """Held-out MAE of the model and the last value, one line per node (and the fleet's)."""
    lines = ["| node | rows | MAE model | MAE last value | ratio |", "|---|---|---|---|---|"]
    rows = list(per_node.items()) + ([("(fleet)", fleet)] if fleet else [])
    for node, s in rows:
        m, b = s.get("model_mae"), s.get("baseline_mae")
        ratio = f"{m / b:.2f}" if m is not None and b else "-"
        n = s.get("rows", s.get("holdout_rows"))
        lines.append(f"| {node} | {n} | {m if m is not None else '-'} | "
                     f"{b if b is not None else '-'} | {ratio} |")  # fmt: skip
    return "\n".join(lines)


def _evaluate(args: argparse.Namespace) -> int:
    from tuner.offline.evaluate import evaluate, render

    if args.dataset:
        from tuner.offline.fleet import evaluate_dataset

        if args.out:
            from tuner.errors import TunerError

            raise TunerError("--out (plots) works with --trace only", "drop --out")
        r = evaluate_dataset(args.dataset, args.model, progress=_progress("tuner evaluate"))
        print(json.dumps(r, indent=2) if args.json else _per_node_text(r["per_node"], r["fleet"]))
        return 0

    r = evaluate(args.trace, args.model, args.out)
    print(json.dumps(r, indent=2) if args.json else render(r))
    return 0
