"""Subcommands ``tuner experiment run|list``.

>>> import argparse
>>> p = argparse.ArgumentParser(); sub = p.add_subparsers()
>>> register(sub, argparse.HelpFormatter)
>>> p.parse_args(["experiment", "run", "x.toml", "--profile", "uniform"]).profile
'uniform'
>>> bar("kernel", 0.5, "10 requests", width=10)
'kernel     [#####.....]  50%  10 requests'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from tuner.errors import TunerError
from tuner.workload.profiles import NAMES as PROFILES


def register(sub: argparse._SubParsersAction, formatter: Any) -> None:
    e = sub.add_parser(
        "experiment",
        formatter_class=formatter,
        help="run tuning experiments on a test cluster of network namespaces",
        description="Bring up a test cluster, run the reference workload under each arm\n"
        "(kernel, reactive, shadow, active) with the same seed, and write\n"
        "summary.json, samples.parquet, plots and report.md. See docs/experiments.md.",
        epilog="examples:\n  tuner experiment list\n  tuner experiment run "
        "experiments/default.toml\n  tuner experiment run experiments/default.toml "
        "--profile uniform --out /tmp/u",
    )
    esub = e.add_subparsers(title="commands", metavar="<command>")
    r = esub.add_parser(
        "run",
        formatter_class=formatter,
        help="run one spec, all its arms back to back",
        description="Run the spec's arms back to back on one cluster with one seed; a\n"
        "progress bar per arm; Ctrl-C stops and still writes what was measured.",
        epilog="examples:\n  tuner experiment run experiments/default.toml --out results/default",
    )
    r.add_argument("path", metavar="PATH", help="experiment spec (TOML)")
    r.add_argument("--out", metavar="DIR", help="output folder (default: results/<name>)")
    r.add_argument("--profile", choices=PROFILES, help="override the spec's skew profile")
    r.add_argument(
        "--of-limit",
        type=float,
        metavar="F",
        help="run at this share of the highest rate the kernel's placement sustained in the "
        "calibration (overrides workload.of_limit, e.g. 0.8 for a server with headroom)",
    )
    r.add_argument("--arms", metavar="A,B", help="run only these arms (comma-separated)")
    r.add_argument(
        "--variant",
        action="append",
        metavar="KEY=VALUE",
        help="an agent setting of the variant arm, over the spec's [tuner] (and [variant]); "
        "repeatable, e.g. --variant policy.horizon=true. The variant arm (the active arm with "
        "these settings) is added to the arms when they do not name it, and its p99 is "
        "compared with the active arm's round by round (p99/active)",
    )
    r.add_argument(
        "--repeats",
        type=int,
        metavar="N",
        help="run N rounds of all arms, their order turned each round, and report medians "
        "(default: the spec's repeats, 1)",
    )
    r.add_argument("--json", action="store_true", help="print summary.json instead of a table")
    r.add_argument(
        "--no-plots",
        dest="plots",
        action="store_false",
        help="leave out latency_cdf.png and worker_load.png (saves seconds a round)",
    )
    r.set_defaults(func=_run)
    ls = esub.add_parser(
        "list",
        formatter_class=formatter,
        help="show the experiment specs in a folder",
        epilog="examples:\n  tuner experiment list\n  tuner experiment list --dir my-specs",
    )
    ls.add_argument("--dir", default="experiments", help="folder of specs (default: %(default)s)")
    ls.set_defaults(func=_list)
    e.set_defaults(func=lambda _a: e.print_help() or 2)


def bar(arm: str, fraction: float, note: str, width: int = 30) -> str:
    """One progress line."""
    done = int(round(fraction * width))
    return f"{arm:<10} [{'#' * done}{'.' * (width - done)}] {fraction:4.0%}  {note}"


class _Progress:
    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, arm: str, fraction: float, note: str) -> None:
        now = time.monotonic()
        final = fraction >= 1.0
        if not self.tty and not final and now - self.last < 5:
            return
        self.last = now
        end = "\n" if final or not self.tty else ""
        print(
            ("\r" if self.tty else "") + bar(arm, fraction, note),
            end=end,
            file=sys.stderr,
            flush=True,
        )


def _run(args: argparse.Namespace) -> int:
    from tuner.experiment.keys import ARMS, SCHEMA
    from tuner.experiment.report import write_all
    from tuner.experiment.rounds import run_rounds
    from tuner.experiment.runner import Runner
    from tuner.experiment.spec import ExperimentSpec
    from tuner.experiment.tables import learning_table, notes, table
    from tuner.schema import check_value
    from tuner.system import require_root

    spec = ExperimentSpec.load(args.path)
    if args.profile:
        spec = spec.with_value("workload.profile", args.profile, "--profile")
    if args.of_limit is not None:
        spec = spec.with_value("workload.of_limit", args.of_limit, "--of-limit")
    if args.variant:
        spec = spec.with_variant(variant_settings(args.variant), "--variant")
    if args.arms:
        arms = [a.strip() for a in args.arms.split(",")]
        bad = [a for a in arms if a not in ARMS]
        if bad:
            raise TunerError(f"unknown arm {bad[0]!r}", f"choose from {', '.join(ARMS)}")
    else:
        arms = list(spec.arms)
    if args.variant and "variant" not in arms:
        arms.append("variant")
    spec = spec.with_arms(arms, "--arms" if args.arms else str(args.path))
    if args.repeats is not None:
        spec.values["repeats"] = check_value(SCHEMA, "repeats", args.repeats, "--repeats")
    repeats = spec.get("repeats")
    require_root("tuner experiment run")
    out = Path(args.out or f"results/{spec.get('name')}-{spec.get('workload.profile')}")
    print(
        f"experiment {spec.get('name')}: profile {spec.get('workload.profile')}, arms "
        f"{', '.join(spec.arms)}, {spec.get('warmup_s') + spec.get('duration_s'):g} s each"
        f"{f', {repeats} rounds' if repeats > 1 else ''}; "
        f"output in {out}; Ctrl-C stops and keeps what was measured",
        file=sys.stderr,
    )
    if repeats > 1:
        summary, interrupted = run_rounds(spec, out, repeats, _Progress(), args.plots)
    else:
        runner = Runner(spec, out, _Progress())
        results = runner.run()
        summary = write_all(spec, results, out, runner.rate, runner.calibration, args.plots)
        interrupted = any(r.interrupted for r in results)
    print(json.dumps(summary, indent=2) if args.json else table(summary))
    if not args.json and learning_table(summary):
        print(learning_table(summary))
    if not args.json:
        for line in notes(summary):
            print(line)
    if interrupted:
        print(f"tuner: interrupted; partial results in {out}", file=sys.stderr)
        return 130
    failed = [arm for arm, m in summary["arms"].items() if m.get("failed")]
    if failed:
        raise TunerError(
            f"arm {failed[0]} failed: {summary['arms'][failed[0]]['failed']}"
            + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""),
            f"see {out}/report.md and the arm's agent.log",
        )
    return 0


def _list(args: argparse.Namespace) -> int:
    from tuner.experiment.spec import list_specs

    folder = Path(args.dir)
    if not folder.is_dir():
        raise TunerError(f"{folder} is not a folder", "pass --dir with the folder of specs")
    for s in list_specs(folder):
        w = s.to_json()["workload"]
        print(
            f"{str(s.path):<34} {w['profile']:<17} {w['rate']:>7g} req/s  "
            f"{s.get('warmup_s') + s.get('duration_s'):g} s x {len(s.arms)} arms"
        )
        if s.get("description"):
            print(f"    {s.get('description')}")
    return 0


def variant_settings(items: list[str]) -> dict[str, dict[str, Any]]:
    """``--variant`` arguments as sections of agent settings, values read as TOML (a bare word
    that is not TOML: a string).

    >>> variant_settings(["policy.horizon=true", "model.kind=linear", "policy.hot_guard=0.8"])
    {'policy': {'horizon': True, 'hot_guard': 0.8}, 'model': {'kind': 'linear'}}
    >>> variant_settings(["horizon"])
    Traceback (most recent call last):
    ...
    tuner.errors.TunerError: --variant 'horizon' is not SECTION.KEY=VALUE; fix: e.g. --variant \
policy.horizon=true
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        sec, dot, name = key.strip().partition(".")
        if not eq or not dot or not sec or not name:
            raise TunerError(f"--variant {item!r} is not SECTION.KEY=VALUE",
                             "e.g. --variant policy.horizon=true")  # fmt: skip
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out.setdefault(sec, {})[name] = value
    return out
