"""The ``riskscore`` command line: one entry point for operators and analysts.

Sub-commands import what they need when they run, so ``riskscore --help`` stays instant
and ``riskscore serve`` (``service.cli``) runs where only the service is installed; the
offline commands need the ``train`` extra, and say so when it is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from service.cli import add_serve_command
from service.errors import RiskscoreError
from service.settings import DEFAULT_RULES_DIR, Settings

# The import names of the `train` extra's packages (pyproject.toml).
TRAIN_EXTRA_MODULES = frozenset(
    {"sklearn", "joblib", "pyarrow", "matplotlib", "rich", "tqdm", "httpx"}
)


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_rules_check(args: argparse.Namespace) -> int:
    """``riskscore rules check``: validate rule files."""
    from service.rules.rulebook import RuleLimits, check_directory, load_ruleset

    directory = Path(args.directory or os.environ.get("RISKSCORE_RULES_DIR") or DEFAULT_RULES_DIR)
    limits = RuleLimits.of(Settings.from_env(os.environ))  # the service's own limits
    problems = check_directory(directory, limits)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"{len(problems)} problem(s) in {directory}", file=sys.stderr)
        return 1
    ruleset = load_ruleset(directory, limits)
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
    """``riskscore simulate``: write a synthetic, labelled transaction log."""
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
    """``riskscore train``: train, evaluate and register a model."""
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
    """``riskscore evaluate``: the registered model and rules over a labelled log."""
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
    """``riskscore backtest``: a rule set over a labelled log."""
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


def cmd_replay(args: argparse.Namespace) -> int:
    """``riskscore replay``: send a log to a running service, labels included."""
    import asyncio

    import httpx

    from training.logs import read_log
    from training.replay import CLOCK_REMINDER, ReplayError, replay

    log = read_log(args.log)
    if args.limit is not None:
        from training.replay import log_seconds

        log = log.iloc[log_seconds(log["timestamp"]).argsort(kind="stable")[: args.limit]]
    print(f"reminder: {CLOCK_REMINDER}", file=sys.stderr)

    async def run() -> dict:
        limits = httpx.Limits(max_connections=args.concurrency + 2)
        async with httpx.AsyncClient(base_url=args.url, timeout=args.timeout, limits=limits) as c:
            return await replay(
                log,
                client=c,
                api_key=args.api_key,
                feedback_key=args.feedback_key,
                concurrency=args.concurrency,
                progress=not args.json,
                all_labels=args.all_labels,
            )

    try:
        result = asyncio.run(run())
    except ReplayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = result["non_2xx"] + result["transport_errors"]
    if args.json:
        _print_json(result)
        return 1 if failed else 0
    print(
        f"replayed {result['sent']:,} payments in {result['seconds']} s "
        f"({result['requests_per_second'] or 0:,.0f}/s, concurrency {result['concurrency']}); "
        f"status {result['status']}"
    )
    for error in result["errors"]:
        print(f"  {error['transaction_id']}: {error['status']} {error['detail']}", file=sys.stderr)
    _table(
        "decisions",
        ["decision", "payments", "rate"],
        [[d, r["count"], f"{r['rate']:.2%}"] for d, r in result["decisions"].items()],
    )
    metrics = result["metrics"]
    if metrics:
        rows = [
            [n, metrics.get(n)]
            for n in ("rows", "frauds", "roc_auc", "average_precision", "card_precision_at_100")
        ]
        for part in ("decline", "review_or_decline"):
            rows += [[f"{part} {k}", metrics[part][k]] for k in ("rate", "precision", "recall")]
        _table("labelled payments (score and decisions)", ["metric", "value"], rows)
    latency = result["latency_ms"]
    _table(
        "client-side latency of /v1/score (ms)",
        ["p50", "p99", "p99.9", "max", "requests/s", "non-2xx"],
        [[*latency.values(), result["requests_per_second"], result["non_2xx"]]],
    )
    if result["degraded"]:
        print("degraded: " + ", ".join(f"{k} {v:,}" for k, v in result["degraded"].items()))
    fb = result["feedback"]
    print(
        f"labels: {fb['accepted']:,} of {fb['sent']:,} sent were accepted; "
        f"{fb['pending']:,} not yet known when the log ended"
    )
    for warning in result["warnings"]:
        if warning != CLOCK_REMINDER:
            print(f"warning: {warning}", file=sys.stderr)
    return 1 if failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    """``riskscore export``: the decision log and labels as transaction logs."""
    import asyncio

    import redis.asyncio as aioredis

    from training.export import export
    from training.train import to_unix_seconds

    url = args.redis_url or os.environ.get("RISKSCORE_REDIS_URL") or Settings().redis_url
    if url.startswith("redis+cluster://"):
        print("error: export from a Redis Cluster is not supported yet", file=sys.stderr)
        return 2
    prefix = args.prefix or os.environ.get("RISKSCORE_REDIS_PREFIX") or Settings().redis_prefix

    async def run() -> dict:
        client = aioredis.Redis.from_url(url, socket_timeout=60, socket_connect_timeout=5)
        try:
            return await export(
                client,
                prefix,
                args.out,
                since=to_unix_seconds(args.since),
                progress=not args.json,
            )
        finally:
            await client.aclose()

    result = asyncio.run(run())
    if args.json:
        _print_json(result)
        return 0
    print(
        f"exported {result['decisions']:,} decisions and {result['labels']:,} labels "
        f"to {result['out']}; {result['labelled_transactions']:,} transactions labelled "
        f"({result['frauds']:,} fraud)"
    )
    if result["skipped"] or result["duplicates"]:
        print(
            f"skipped {result['skipped']:,} unreadable entries and "
            f"{result['duplicates']:,} repeated transactions",
            file=sys.stderr,
        )
    if result["unknown_catalog"]:
        print(
            f"{result['unknown_catalog']:,} decisions exported without their features: "
            f"their feature catalogue is not registered in Redis "
            f"({', '.join(result['unknown_catalog_versions'])})",
            file=sys.stderr,
        )
    _table("files", ["file", "path"], [[n, p] for n, p in result["files"].items()])
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``riskscore`` argument parser, every command registered."""
    parser = argparse.ArgumentParser(
        prog="riskscore",
        description="Fraud and risk scoring for a payment gateway: serve, simulate, train, "
        "evaluate, backtest, replay, export, and check rule files.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_serve_command(sub)

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

    replay = sub.add_parser(
        "replay",
        help="send a transaction log to a running service, feeding labels back; print metrics",
        description="Send the log's payments to POST /v1/score in time order and each label "
        "to POST /v1/feedback once the replay's clock (the next payment's time) reaches its "
        "label_at (fraud is sent as 'fraud', 0 as 'legit'). The service must run with "
        "RISKSCORE_CLOCK=event, or its velocity windows follow its own clock, not the log's. "
        "Prints decision rates, metrics of the labelled rows and client-side latency; exits 1 "
        "when some payments were not answered with 2xx.",
    )
    replay.add_argument("--log", type=Path, required=True, help="transaction log (.parquet/.csv)")
    replay.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    replay.add_argument("--api-key", required=True, help="a key with the score role")
    replay.add_argument("--feedback-key", help="a key with the feedback role (default: --api-key)")
    replay.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="payments in flight (default 1: strict time order; more is faster but a "
        "payment may then be counted before the one just ahead of it)",
    )
    replay.add_argument("--limit", type=int, help="only the first N payments in time order")
    replay.add_argument(
        "--all-labels",
        action="store_true",
        help="at the end, also send labels known only after the log's last payment",
    )
    replay.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per HTTP call (default 10)"
    )
    replay.add_argument("--json", action="store_true", help="print one JSON object")
    replay.set_defaults(func=cmd_replay)

    export = sub.add_parser(
        "export",
        help="write the decision log and labels from Redis as transaction logs",
        description="Write DIR/decisions.parquet (log columns with pseudonyms, the decision, "
        "f_<feature> columns), DIR/labels.parquet and DIR/transactions.parquet (decisions "
        "with their latest label, for riskscore train --log).",
    )
    export.add_argument("--out", type=Path, required=True, help="output folder")
    export.add_argument("--redis-url", help="default RISKSCORE_REDIS_URL")
    export.add_argument("--prefix", help="key prefix (default RISKSCORE_REDIS_PREFIX, rs)")
    export.add_argument("--since", help="only payments from this time on (RFC 3339)")
    export.add_argument("--json", action="store_true", help="print one JSON object")
    export.set_defaults(func=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``riskscore`` command; bad input is a message and exit 2, not a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in TRAIN_EXTRA_MODULES:
            raise
        print(
            f"riskscore {args.command}: needs {exc.name}, of the train extra: "
            "pip install 'riskscore[train]'",
            file=sys.stderr,
        )
        return 2
    except (RiskscoreError, ValueError, FileNotFoundError) as exc:  # say what, no traceback
        print(f"riskscore {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
