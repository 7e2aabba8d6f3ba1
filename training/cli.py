"""The ``riskscore`` command line: one entry point for operators and analysts.

Sub-commands import what they need when they run, so ``riskscore --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from service.settings import DEFAULT_RULES_DIR, Settings


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings.from_env(os.environ)
    if not settings.secret:
        print("RISKSCORE_SECRET is not set; `make run` writes a development one to .run/env")
        return 2
    uvicorn.run(
        "service.app:app_from_env",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def cmd_rules_check(args: argparse.Namespace) -> int:
    from service.rules.rulebook import check_directory, load_ruleset

    directory = Path(args.directory or os.environ.get("RISKSCORE_RULES_DIR") or DEFAULT_RULES_DIR)
    problems = check_directory(directory)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"{len(problems)} problem(s) in {directory}", file=sys.stderr)
        return 1
    ruleset = load_ruleset(directory)
    packs: dict[str, list[str]] = {}
    for rule in ruleset.rules:
        packs.setdefault(rule.pack, []).append(rule.mode)
    if args.json:
        _print_json({"directory": str(directory), "version": ruleset.version, "packs": packs})
        return 0
    print(f"{directory}: valid, {ruleset.version}")
    for pack, modes in sorted(packs.items()):
        shadow = modes.count("shadow")
        print(f"  {pack:<10} {len(modes):>3} rules ({shadow} shadow)")
    return 0


def _secret() -> bytes | None:
    value = os.environ.get("RISKSCORE_SECRET")
    return value.encode() if value else None


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    Console().print(table)


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def cmd_simulate(args: argparse.Namespace) -> int:
    import time

    from training.simulate import simulate, summarise, write_log

    started = time.perf_counter()
    frame = simulate(args.rows, seed=args.seed, start=args.start, progress=not args.json)
    write_log(frame, args.out)
    summary = summarise(frame) | {
        "out": str(args.out),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        _print_json(summary)
        return 0
    print(
        f"wrote {len(frame):,} transactions to {args.out} in {summary['seconds']} s; "
        f"{summary['frauds']:,} frauds ({summary['fraud_rate']:.2%})"
    )
    _table(
        "by vertical",
        ["vertical", "payments", "frauds", "fraud rate"],
        [
            [v, r["rows"], r["frauds"], f"{r['fraud_rate']:.2%}"]
            for v, r in summary["by_vertical"].items()
        ],
    )
    _table(
        "by fraud pattern",
        ["pattern", "payments", "share of fraud"],
        [[p, r["rows"], f"{r['share_of_fraud']:.1%}"] for p, r in summary["by_pattern"].items()],
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from training.logs import read_log
    from training.train import train

    log = read_log(args.log)
    report = train(
        log,
        registry=args.registry,
        since=args.since,
        seed=args.seed,
        progress=not args.json,
        target_decline_rate=args.decline_rate,
        secret=_secret(),
    )
    result = report.to_dict()
    if args.json:
        _print_json(result)
        return 0
    print(f"registered {report.version} in {report.directory}")
    print(f"model card: {Path(report.directory) / 'MODEL_CARD.md'}")
    metrics = result.get("metrics", {})
    names = ["rows", "frauds", "roc_auc", "average_precision", "recall_at_1%_decline"]
    names += ["recall_at_5%_decline", "card_precision_at_100"]
    periods = [p for p in ("validation", "test") if p in metrics]
    _table(
        "metrics (test is held out, in time order)",
        ["metric", *periods],
        [[n, *(metrics[p].get(n) for p in periods)] for n in names],
    )
    by_vertical = metrics.get("test", {}).get("by_vertical", {})
    _table(
        "test period by vertical",
        ["vertical", "rows", "frauds", "roc_auc", "average_precision", "recall_at_1%_decline"],
        [
            [
                v,
                m.get("rows"),
                m.get("frauds"),
                m.get("roc_auc"),
                m.get("average_precision"),
                m.get("recall_at_1%_decline"),
            ]
            for v, m in by_vertical.items()
        ],
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate
    from training.logs import read_log
    from training.train import to_unix_seconds

    result = evaluate(
        read_log(args.log),
        registry=args.registry,
        since=to_unix_seconds(args.since),
        rules_dir=args.rules,
        out_dir=args.out,
        secret=_secret(),
        progress=not args.json,
    )
    if args.json:
        _print_json(result)
        return 0
    columns = ["", "roc_auc", "average_precision", "recall_at_1pct", "recall_at_5pct", "cp_at_100"]
    rows = []
    for name in ("model", "rules", "combined"):
        part = result.get(name) or {}
        rows.append([name, *(part.get(c) for c in columns[1:])])
    _table("evaluation", columns, rows)
    if args.out:
        print(f"PR and ROC curves in {args.out}")
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    from training.backtest import backtest
    from training.logs import read_log

    result = backtest(read_log(args.log), rules_dir=args.rules, secret=_secret())
    if args.json:
        _print_json(result)
        return 0
    rows = [
        [rule_id, r["mode"], r["action"], r["hits"], r["precision"], r["recall"]]
        for rule_id, r in sorted(result["rules"].items(), key=lambda kv: -kv[1]["hits"])
    ]
    _table(
        f"rule set {result['version']} over {result['rows']:,} payments",
        ["rule", "mode", "action", "hits", "precision", "recall"],
        rows,
    )
    total = result["total"]
    print(
        f"approval rate {total['approval_rate']:.3%}, decline rate {total['decline_rate']:.3%}, "
        f"fraud caught (decline or review) {total['recall']:.1%}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="riskscore",
        description="Fraud and risk scoring for a payment gateway: serve, simulate, train, "
        "evaluate, backtest, replay, export, and check rule files.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the HTTP scoring service. Configuration comes from RISKSCORE_* "
        "environment variables (see README); options here override host and port.",
    )
    serve.add_argument("--host", help="address to listen on (RISKSCORE_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (RISKSCORE_PORT, 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.set_defaults(func=cmd_serve)

    rules = sub.add_parser("rules", help="work with rule files")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    check = rules_sub.add_parser(
        "check",
        help="validate rule files without starting anything",
        description="Parse and compile every rule file; exit 1 and name file, line and rule "
        "for each problem.",
    )
    check.add_argument("directory", nargs="?", help="rule directory (RISKSCORE_RULES_DIR)")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(func=cmd_rules_check)

    simulate = sub.add_parser(
        "simulate",
        help="write a synthetic, labelled transaction log",
        description="Generate seeded gateway traffic with labelled fraud patterns "
        "(Parquet or CSV by the file suffix).",
    )
    simulate.add_argument("--out", type=Path, required=True, help="output .parquet or .csv")
    simulate.add_argument("--rows", type=int, default=100_000, help="payments (default 100000)")
    simulate.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    simulate.add_argument("--start", default="2026-09-01", help="first day (default 2026-09-01)")
    simulate.add_argument("--json", action="store_true", help="print one JSON object")
    simulate.set_defaults(func=cmd_simulate)

    train = sub.add_parser(
        "train",
        help="build features from a log, train, evaluate and register a model",
        description="Rows before --since, and rows without a label, are history only: they "
        "feed the features but are not training examples.",
    )
    train.add_argument("--log", type=Path, required=True, help="transaction log with labels")
    train.add_argument("--since", help="first training example time (RFC 3339)")
    train.add_argument("--registry", type=Path, default=Path("models"), help="default models/")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--decline-rate", type=float, default=0.01, help="target decline rate (default 0.01)"
    )
    train.add_argument("--json", action="store_true", help="print one JSON object")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser(
        "evaluate",
        help="score a labelled log with the registered model and rules; print metrics",
    )
    evaluate.add_argument("--log", type=Path, required=True)
    evaluate.add_argument("--registry", type=Path, default=Path("models"))
    evaluate.add_argument("--rules", type=Path, help="rule directory (default: shipped packs)")
    evaluate.add_argument("--out", type=Path, help="folder for pr.png and roc.png")
    evaluate.add_argument(
        "--since", help="score only payments from this time (RFC 3339); earlier rows are history"
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(func=cmd_evaluate)

    backtest = sub.add_parser(
        "backtest",
        help="evaluate a rule set over a labelled log: hits, precision, recall, approval rate",
    )
    backtest.add_argument("--log", type=Path, required=True)
    backtest.add_argument("--rules", type=Path, help="rule directory (default: shipped packs)")
    backtest.add_argument("--json", action="store_true", help="print one JSON object")
    backtest.set_defaults(func=cmd_backtest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
