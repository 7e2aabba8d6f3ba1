"""The ``riskscore`` command line: one entry point for operators and analysts.

Sub-commands import what they need when they run, so ``riskscore --help`` stays instant
and ``riskscore serve`` and ``archive`` (``service.cli``) run where only the service is
installed; the offline commands need the ``train`` extra, and say so when it is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.cli import add_archive_command, add_reference_command, add_serve_command
from service.errors import RiskscoreError
from service.settings import DEFAULT_RULES_DIR, Settings

# The import names of the `train` extra's packages (pyproject.toml).
TRAIN_EXTRA_MODULES = frozenset(
    {"sklearn", "joblib", "pyarrow", "matplotlib", "rich", "tqdm", "httpx", "ruamel"}
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


def cmd_assets_update(args: argparse.Namespace) -> int:
    """Fetch the pinned UI files again (optionally at new versions); 1 when refused."""
    from training.assets import AssetError, update

    bump = {}
    for spec in args.packages:
        name, at, version = spec.rpartition("@")
        if not at or not name or not version:
            print(f"riskscore assets update: {spec!r} is not NAME@VERSION", file=sys.stderr)
            return 2
        bump[name] = version
    try:
        for line in update(bump, npm=args.npm):
            print(f"updated {line}")
    except AssetError as exc:
        print(f"riskscore assets update: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_assets_check(args: argparse.Namespace) -> int:
    """Compare the shipped UI files with their pins; 1 when one differs."""
    from training.assets import check, load_sources

    problems = check()
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    for name, pin in load_sources()["packages"].items():
        print(f"{name} {pin['version']} ({pin['license']}): {len(pin['files'])} files as pinned")
    return 0


def _secret() -> bytes | None:
    value = os.environ.get("RISKSCORE_SECRET")
    return value.encode() if value else None


def _table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], *, width: int = 0
) -> None:
    """A table on stdout, at least ``width`` characters wide.

    In a narrower terminal lines wrap rather than values being cut.
    """
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right", no_wrap=bool(width))
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    console = Console()
    if width > console.width:
        console = Console(width=width)
    console.print(table)


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
    frame = simulate(
        args.rows,
        seed=args.seed,
        start=args.start,
        realism=args.realism,
        progress=not args.json,
    )
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
        ["pattern", "labelled fraud", "share of fraud", "never labelled"],
        [
            [p, r["rows"], f"{r['share_of_fraud']:.1%}", r["never_labelled"]]
            for p, r in summary["by_pattern"].items()
        ],
    )
    return 0


GATE_REFUSED_EXIT = 3  # ``train``: registered, but the promotion gate kept it from going live


# ``riskscore train`` chooses its feature set on validation unless told (training.feature_sets)
AUTO_FEATURES = "auto"
FEATURES_HELP = (
    "feature set the model learns from: a set name (default, all) then -GROUP or +GROUP "
    "(or a single model column), comma-separated, e.g. all,-reported_fraud_rate; groups: "
    "frauds, reported_frauds, reported_fraud_rate, merchant_reported, merchant_reported_rate, "
    "merchant_fraud_counts, merchant_matured_rate, amount_over_mean, amount_zscore, local_time "
    "(training/feature_sets.py; default: the set docs/model-evaluation.md chose)"
)


def _share(text: str) -> float:
    """A share in (0, 1] for ``--refit-sample``; argparse names the option on failure."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a share in (0, 1], not {text}")
    return value


# ``--refit-sample`` of train and walkforward (training.train.refit_sample_rows); the
# default's 250,000 is training.train.REFIT_LEGIT_ROWS (a test checks they agree).
REFIT_SAMPLE_ARGUMENT: dict[str, Any] = {
    "type": _share,
    "metavar": "SHARE",
    "help": "the refit on every mature labelled row learns from every fraud and this share "
    "of the legitimate rows, each weighted 1/SHARE so calibration and thresholds stay right "
    "(default: all legitimate rows up to 250,000, a sample of 250,000 above; 1 = every row)",
}


def cmd_train(args: argparse.Namespace) -> int:
    """``riskscore train``: train, evaluate, register, and promote through the gate.

    0 when done (promoted, or registered with --no-promote); ``GATE_REFUSED_EXIT`` when
    registered but not promoted because it is worse than the live model.
    """
    from training.logs import read_log
    from training.train import feature_request, train

    feature_request(args.features, args.candidate)  # a bad spec fails before any work
    if args.log is None and not args.from_archive:
        print("error: --log PATH or --from-archive is required", file=sys.stderr)
        return 2
    if args.log is not None and args.from_archive:
        print("error: --log and --from-archive exclude each other", file=sys.stderr)
        return 2
    if args.from_archive:
        log = _log_from_archive(args)
        if log is None:
            return 2
    else:
        log = read_log(args.log)
    report = train(
        log,
        registry=args.registry,
        since=args.since,
        legit_after_days=args.legit_after,
        as_of=args.as_of,
        promote=not args.no_promote,  # through the promotion gate (training.gate)
        force=args.force,
        seed=args.seed,
        progress=not args.json,
        target_decline_rate=args.decline_rate,
        secret=_secret(),
        refit=not args.no_refit,
        refit_sample=args.refit_sample,
        exclude_known_fraud=args.exclude_known_fraud,
        features=args.features,
        feature_candidates=args.candidate,
    )
    gate, promoted = report.gate, report.promoted
    result = report.to_dict()
    code = GATE_REFUSED_EXIT if gate is not None and not promoted else 0
    for warning in result["warnings"]:
        print(f"WARNING: {warning}", file=sys.stderr)
    if args.json:
        _print_json(result)
        return code
    if args.no_promote:
        live = "not promoted (--no-promote): `riskscore models promote` makes it live"
    elif promoted:
        live = "live" + (", forced past the gate" if result["forced"] else "")
    else:
        live = "registered, NOT promoted: the gate refused it; --force overrides"
    print(f"registered {report.version} in {report.directory} ({live})")
    if gate is not None:
        print(f"promotion gate: {gate.reason}", file=sys.stderr if not promoted else sys.stdout)
        for warning in gate.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    print(f"model card: {Path(report.directory) / 'MODEL_CARD.md'}")
    maturity = report.card["training_data"].get("maturity")
    if maturity:
        print(
            f"--legit-after {maturity['legit_after_days']:g} days as of {maturity['as_of']}: "
            f"{maturity['unlabelled_counted_legit']:,} unlabelled payments up to "
            f"{maturity['mature_until']} counted legitimate; "
            f"{maturity['younger_rows_history_only']:,} younger payments are history only"
        )
    choice = report.card.get("feature_choice")
    if choice:
        how = choice["fallback"] or choice["rule"]
        _table(
            f"feature sets on the validation period (--features auto: {how})",
            ["feature set", "columns", "roc_auc", "average_precision", "recall_at_1%", "chosen"],
            [
                [
                    c["spec"],
                    c["columns_used"],
                    c["validation"]["roc_auc"],
                    c["validation"]["average_precision"],
                    c["validation"]["recall_at_1%_decline"],
                    "yes" if c["chosen"] else "",
                ]
                for c in choice["candidates"]
            ],
            width=120,
        )
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
    return code


def cmd_compare(args: argparse.Namespace) -> int:
    """``riskscore evaluate --model A [--model B]``: models side by side on one period."""
    from service.model.bundle import ModelBundle
    from training.compare import compare_models
    from training.logs import read_log
    from training.train import to_unix_seconds

    registry = Path(args.registry)
    bundles = [ModelBundle.load(_model_directory(registry, v)) for v in args.model]
    result = compare_models(
        read_log(args.log),
        bundles,
        since=to_unix_seconds(args.since),
        until=to_unix_seconds(args.until),
        plots_dir=args.plots or args.out,
        secret=_secret(),
        progress=not args.json,
    )
    for warning in result["warnings"]:
        print(f"WARNING: {warning}", file=sys.stderr)
    if args.json:
        _print_json(result)
        return 0
    period = result["period"]
    names = ["roc_auc", "average_precision", "recall_at_1%_decline", "recall_at_5%_decline"]
    names += ["card_precision_at_100"]
    rows = [[n, *(m.get(n) for m in result["models"])] for n in names]
    for part in ("decline", "review_or_decline"):
        for key in ("rate", "precision", "recall"):
            rows.append(
                [
                    f"{part} {key} (thresholds)",
                    *(m.get("at_thresholds", {}).get(part, {}).get(key) for m in result["models"]),
                ]
            )
    _table(
        f"{period['start'][:16]} to {period['end'][:16]} UTC ({period['source']}): "
        f"{period['rows']:,} labelled payments, {period['frauds']:,} frauds",
        ["metric", *(m["version"] for m in result["models"])],
        rows,
    )
    patterns = sorted({p for m in result["models"] for p in m.get("by_fraud_pattern", {})})
    if patterns:
        _table(
            "recall at 1 % decline per fraud pattern",
            ["pattern", *(m["version"] for m in result["models"])],
            [
                [
                    p,
                    *(
                        m["by_fraud_pattern"].get(p, {}).get("recall_at_1%_decline")
                        for m in result["models"]
                    ),
                ]
                for p in patterns
            ],
        )
    if "plots" in result:
        print("plots: " + ", ".join(result["plots"].values()))
    return 0


def _fitted_rows_warnings(registry: Path, result: dict[str, Any]) -> list[str]:
    """A warning when ``evaluate``'s period reaches into the rows the model was fitted on."""
    from service.model.bundle import ModelBundle
    from training.compare import period_overlap_warning

    period = result.get("period") or {}
    bundle = ModelBundle.load(Path(registry) / result["model_version"])
    warning = period_overlap_warning(bundle, period.get("start"), period.get("end"))
    return [warning] if warning else []


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``riskscore evaluate``: the registered model and rules over a labelled log."""
    if args.model:
        return cmd_compare(args)
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
    result["warnings"] = _fitted_rows_warnings(args.registry, result)
    for warning in result["warnings"]:
        print(f"WARNING: {warning}", file=sys.stderr)
    if args.json:
        _print_json(result)
        return 0
    keys = ["roc_auc", "average_precision", "recall_at_1%_decline", "recall_at_5%_decline"]
    keys.append("card_precision_at_100")
    columns = ["", "roc_auc", "average_precision", "recall_at_1pct", "recall_at_5pct", "cp_at_100"]
    rows = []
    for name in ("model", "rules", "combined"):
        part = result.get(name) or {}
        rows.append([name, *(part.get(c) for c in keys)])
    _table("evaluation", columns, rows)
    if args.out:
        print(f"PR and ROC curves in {args.out}")
    return 0


def cmd_walkforward(args: argparse.Namespace) -> int:
    """``riskscore walkforward``: successive train-then-test periods in time order."""
    from training.logs import read_log
    from training.walkforward import HEADLINE, walk_forward

    result = walk_forward(
        read_log(args.log),
        folds=args.folds,
        test_share=args.test_share,
        legit_after_days=args.legit_after,
        exclude_known_fraud=args.exclude_known_fraud,
        minimal=args.minimal,
        features=args.features,
        compare=args.compare or (),
        seed=args.seed,
        refit_sample=args.refit_sample,
        secret=_secret(),
        progress=not args.json,
    )
    if args.json:
        _print_json(result)
        return 0
    names = ["ROC AUC", "AP", "recall@1%", "CP@100"]
    rows = []
    for fold in result["per_fold"]:
        rows.append(
            [f"fold {fold['fold']} ({fold['test']['start'][:10]}…{fold['test']['end'][:10]})"]
            + [fold["all"][k] for k in HEADLINE]
            + [fold["unknown_entities"][k] for k in HEADLINE[:3]]
            + [fold["test_frauds"]]
        )
    for stat in ("mean", "std"):
        summary = result["summary"]
        rows.append(
            [stat]
            + [summary["all"][k][stat] for k in HEADLINE]
            + [summary["unknown_entities"][k][stat] for k in HEADLINE[:3]]
            + [None]
        )
    title = "walk-forward" + (" (minimal columns)" if args.minimal else "")
    fresh = ["AUC new", "AP new", "recall@1% new"]
    _table(title, ["", *names, *fresh, "frauds"], rows, width=120)
    patterns = result["summary"]["by_pattern"]
    _table(
        "share of each pattern's payments in the riskiest 1 % (labelled or not)",
        ["pattern", "payments", "mean", "std"],
        [[p, m["rows"], m["mean"], m["std"]] for p, m in patterns.items()],
    )
    print("'new': payments whose card, customer, device, email and account had no confirmed fraud")
    if "compared" in result:
        _print_compared(result)
    return 0


HEADLINE_COMPARED = ("roc_auc", "average_precision", "recall_at_1%_decline")


def _print_compared(result: dict) -> None:
    """``walkforward --compare``: each feature set's mean ± sd and its AP and recall per fold."""

    def cell(summary: dict, name: str) -> str:
        figure = summary["all"][name]
        return "–" if figure["mean"] is None else f"{figure['mean']:.3f} ± {figure['std']:.3f}"

    def deltas(values: list) -> str:
        return ", ".join("–" if v is None else f"{v:+.3f}" for v in values)

    first = result["feature_set"]["spec"]
    rows = [[first, *(cell(result["summary"], k) for k in HEADLINE_COMPARED), "", ""]]
    for spec, run in result["compared"].items():
        delta = run["delta_per_fold"]
        figures = [cell(run["summary"], k) for k in HEADLINE_COMPARED]
        ap, recall = delta["all.average_precision"], delta["all.recall_at_1%_decline"]
        rows.append([spec, *figures, deltas(ap), deltas(recall)])
    columns = ["feature set", "ROC AUC", "AP", "recall@1%", "ΔAP per fold", "Δrecall@1% per fold"]
    widest = [max(len(str(v)) for v in values) for values in zip(columns, *rows, strict=True)]
    _table(
        f"feature sets on the same folds (differences per fold against {first})",
        columns,
        rows,
        width=sum(widest) + 3 * len(columns) + 1,  # every value whole, never cut
    )


def cmd_backtest(args: argparse.Namespace) -> int:
    """``riskscore backtest``: a rule set over a labelled log."""
    from training.backtest import backtest
    from training.logs import read_log

    if args.against is not None:
        return _backtest_against(args)
    if args.since is not None or args.until is not None:
        raise ValueError("--since and --until go with --against (the draft beside the live set)")
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


def _backtest_against(args: argparse.Namespace) -> int:
    """``riskscore backtest --rules DRAFT --against DIR``: the draft beside the live set."""
    from training.backtest import compare
    from training.logs import read_log
    from training.train import to_unix_seconds

    if args.rules is None:
        raise ValueError("--against DIR compares a draft: give the draft with --rules DRAFT")
    since, until = to_unix_seconds(args.since), to_unix_seconds(args.until)
    result = compare(
        read_log(args.log),
        draft_dir=args.rules,
        live_dir=args.against,
        since=since,
        until=until,
        secret=_secret(),
    )
    if args.json:
        _print_json(result)
        return 0
    changes = ("newly_stopped", "newly_let_through")

    def cells(entry: dict) -> list[object]:
        return [
            f"{entry[c][k]['payments']:,} / {entry[c][k]['usd']}"
            for c in changes
            for k in ("fraud", "legit")
        ]

    heads = [
        "stopped fraud",
        "stopped legit",
        "let through fraud",
        "let through legit",
    ]
    print(
        f"draft {result['draft']['version']} ({result['draft']['directory']}) beside live "
        f"{result['live']['version']} ({result['live']['directory']}), "
        f"{result['payments']:,} payments; stopped = {result['stopped_means']}; "
        "cells are payments / USD"
    )
    _table("in total", ["", *heads], [["all verticals", *cells(result["total"])]])
    _table(
        "per vertical",
        ["vertical", *heads],
        [[v, *cells(e)] for v, e in result["by_vertical"].items()],
    )
    moved = {
        rule: e
        for rule, e in result["by_rule"].items()
        if any(e[c]["all"]["payments"] for c in changes)
    }
    _table(
        "per rule (a payment counts for every rule that stops it)",
        ["rule", "in", *heads],
        [[rule, e["in"], *cells(e)] for rule, e in moved.items()] or [["no change", "", *[""] * 4]],
        width=140,
    )
    for side in ("live", "draft"):
        for rule, error in result["errors"][side].items():
            print(f"{side} rule {rule} could not run: {error}")
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


def _database_url(args: argparse.Namespace) -> str | None:
    """The archive's URL: ``--database-url`` or ``RISKSCORE_DATABASE_URL``; None (said) else."""
    url = args.database_url or os.environ.get("RISKSCORE_DATABASE_URL")
    if not url:
        print(
            "error: --from-archive needs --database-url or RISKSCORE_DATABASE_URL",
            file=sys.stderr,
        )
        return None
    if not url.startswith(("postgresql://", "postgres://")):
        print("error: --database-url must be a postgresql:// URL", file=sys.stderr)
        return None
    return url


def _log_from_archive(args: argparse.Namespace) -> Any:
    """``train --from-archive``: the archive's labelled transactions up to ``--until``."""
    import asyncio
    import tempfile

    from training.export import export_from_archive
    from training.logs import read_log
    from training.train import to_unix_seconds

    url = _database_url(args)
    if url is None:
        return None
    with tempfile.TemporaryDirectory(prefix="riskscore-archive-") as folder:
        asyncio.run(
            export_from_archive(
                url, folder, until=to_unix_seconds(args.until), progress=not args.json
            )
        )
        return read_log(Path(folder) / "transactions.parquet")


def cmd_export(args: argparse.Namespace) -> int:
    """``riskscore export``: the decision log and labels as transaction logs."""
    import asyncio

    import redis.asyncio as aioredis

    from service.stores.redis_client import is_cluster_url, make_client
    from training.export import export, export_from_archive
    from training.train import to_unix_seconds

    if args.from_archive or args.database_url:
        database_url = _database_url(args)
        if database_url is None:
            return 2
        result = asyncio.run(
            export_from_archive(
                database_url,
                args.out,
                since=to_unix_seconds(args.since),
                until=to_unix_seconds(args.until),
                progress=not args.json,
            )
        )
        return _export_report(args, result)
    if args.until:
        print("error: --until needs --from-archive (the streams are read whole)", file=sys.stderr)
        return 2
    url = args.redis_url or os.environ.get("RISKSCORE_REDIS_URL") or Settings().redis_url
    prefix = args.prefix or os.environ.get("RISKSCORE_REDIS_PREFIX") or Settings().redis_prefix

    async def run() -> dict:
        if is_cluster_url(url):  # the streams are one key each: read from their nodes
            client = make_client(url, timeout_ms=1_500)  # 60 s socket timeout, as below
        else:
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

    return _export_report(args, asyncio.run(run()))


def _export_report(args: argparse.Namespace, result: dict[str, Any]) -> int:
    """Print what ``export`` wrote, as a table or (``--json``) one object."""
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


def cmd_labels_import(args: argparse.Namespace) -> int:
    """``riskscore labels import``: 0 when sent, 1 with invalid or forbidden rows, 2 refused."""
    import asyncio
    import csv

    import httpx

    from training.labels import LabelsImportError, import_labels, iter_label_frames, label_bodies

    try:  # the whole file read once before anything is sent: a file it cannot read sends nothing
        total = sum(len(frame) for frame in iter_label_frames(args.path))
    except LabelsImportError as exc:
        print(f"riskscore labels import: {exc}", file=sys.stderr)
        return 2
    # then read again as it is sent, a part at a time: millions of rows never held at once
    bodies = (body for frame in iter_label_frames(args.path) for body in label_bodies(frame))

    async def run(rejects: Any) -> dict:
        async with httpx.AsyncClient(base_url=args.url, timeout=args.timeout) as client:
            return await import_labels(
                bodies,
                client=client,
                api_key=args.api_key,
                batch_size=args.batch_size,
                retries=args.retries,
                progress=not args.json,
                total=total,
                rejects=rejects,
            )

    try:
        if args.rejects is None:
            result = asyncio.run(run(None))
        else:  # every row not applied, with its field and message, for the feed to fix
            with args.rejects.open("w", newline="", encoding="utf-8") as out:
                writer = csv.DictWriter(out, ["row", "result", "field", "message"])
                writer.writeheader()
                result = asyncio.run(run(writer.writerow))
    except LabelsImportError as exc:
        print(f"riskscore labels import: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"riskscore labels import: cannot write --rejects: {exc}", file=sys.stderr)
        return 2
    result = {"file": str(args.path)} | result
    invalid = result["counts"]["invalid"] + result["counts"]["forbidden"]
    if args.json:
        _print_json(result)
        return 1 if invalid else 0
    counts = result["counts"]
    print(
        f"sent {result['labels']:,} labels from {args.path} in {result['batches']:,} batches "
        f"in {result['seconds']} s ({result['labels_per_second'] or 0:,}/s); "
        f"{result['resent_batches']} batches resent after a failure"
    )
    _table("labels by result", ["result", "labels"], [[k, v] for k, v in counts.items()])
    if result["unknown_rows"]:
        rows = ", ".join(map(str, result["unknown_rows"][:10]))
        print(f"unknown (never scored for that merchant): rows {rows}", file=sys.stderr)
    for problem in result["problems"][:20]:
        print(f"row {problem['row']}: {problem['field']}: {problem['message']}", file=sys.stderr)
    not_applied = invalid + counts["unknown"]
    if args.rejects is not None and not_applied:
        print(f"every row not applied is in {args.rejects}", file=sys.stderr)
    elif not_applied > 20:
        print(f"{not_applied:,} rows not applied: --rejects PATH lists them all", file=sys.stderr)
    return 1 if invalid else 0


def _add_labels_commands(sub: Any) -> None:
    labels = sub.add_parser(
        "labels",
        help="send labels (chargebacks, confirmed fraud) to a running service",
        description="Work with the labels the dispute feed produces.",
    )
    labels_sub = labels.add_subparsers(dest="labels_command", required=True, metavar="ACTION")
    send = labels_sub.add_parser(
        "import",
        help="send a CSV or Parquet file of labels through POST /v1/feedback/batch",
        description="Send a CSV or Parquet file with the columns merchant_id, transaction_id, "
        "label (fraud, chargeback or legit; 1 and 0 read as fraud and legit), reported_at "
        "(RFC 3339; an empty cell is stamped by the service) and optionally reason, in file "
        "order, in batches of up to 1,000 (and 1 MiB), to POST /v1/feedback/batch. Every "
        "label updates entity risk and the labels stream exactly as POST /v1/feedback does. "
        "Batches that meet a connection error or a 5xx are resent with backoff (a label sent "
        "twice counts once). Prints the labels per result (recorded, duplicate, unknown: "
        "never scored, invalid: with row and field; forbidden: a merchant outside the key's "
        "scope); exits 1 when some rows were invalid or forbidden, 2 when the file cannot be "
        "read or the service refused the import.",
    )
    send.add_argument("path", metavar="PATH", type=Path, help="labels file (.csv or .parquet)")
    send.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    send.add_argument("--api-key", required=True, help="a key with the feedback role")
    send.add_argument(
        "--batch-size", type=int, default=1000, help="labels per call (1 to 1000; default 1000)"
    )
    send.add_argument(
        "--retries", type=int, default=6, help="resends of a failed batch (default 6)"
    )
    send.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per HTTP call (default 30)"
    )
    send.add_argument(
        "--rejects",
        type=Path,
        metavar="PATH",
        help="write every row not applied (invalid, forbidden, unknown) to this CSV: "
        "row, result, field, message",
    )
    send.add_argument("--json", action="store_true", help="print one JSON object")
    send.set_defaults(func=cmd_labels_import)


def _registry_dir(args: argparse.Namespace) -> Path:
    return Path(args.registry or os.environ.get("RISKSCORE_MODEL_DIR") or "models")


_MODEL_COLUMNS = (
    *("version", "live", "created", "data (train start to test end)", "test rows", "frauds"),
    *("roc_auc", "avg precision", "recall@1%"),
)


def _minute(stamp: str | None) -> str | None:
    """``2026-09-01T00:05:20+00:00`` as ``2026-09-01 00:05`` (UTC)."""
    return stamp[:16].replace("T", " ") if stamp else None


def cmd_models_list(args: argparse.Namespace) -> int:
    """``riskscore models list``: every registered model, the live one marked."""
    from training.registry import list_models

    registry = _registry_dir(args)
    models = list_models(registry)
    if args.json:
        _print_json(
            [
                {
                    "version": m.version,
                    "live": m.latest,
                    "shadow": m.shadow,
                    "created_at": m.created_at,
                    "data_start": m.data_start,
                    "data_end": m.data_end,
                    "test": m.test_metrics,
                }
                for m in models
            ]
        )
        return 0
    if not models:
        print(f"no models registered in {registry}")
        return 0
    _table(
        f"models in {registry} (test: the held-out period of each model's card)",
        _MODEL_COLUMNS,
        [
            [
                m.version,
                "LATEST" if m.latest else "SHADOW" if m.shadow else "",
                _minute(m.created_at),
                f"{_minute(m.data_start)} to {_minute(m.data_end)}",
                m.test_metrics.get("rows"),
                m.test_metrics.get("frauds"),
                m.test_metrics.get("roc_auc"),
                m.test_metrics.get("average_precision"),
                m.test_metrics.get("recall_at_1%_decline"),
            ]
            for m in models
        ],
        width=160,
    )
    return 0


def _model_directory(registry: Path, version: str) -> Path:
    from service.model.bundle import MODEL_CARD, VERSION_PATTERN, find_latest
    from training.registry import RegistryError

    if version in ("LATEST", "live"):
        directory = find_latest(registry)
        if directory is None:
            raise RegistryError(f"no models registered in {registry}")
        return directory
    if version in ("SHADOW", "shadow"):
        from service.model.bundle import find_shadow

        directory = find_shadow(registry)
        if directory is None:
            raise RegistryError(f"no model is in shadow in {registry}")
        return directory
    directory = registry / version
    if not VERSION_PATTERN.match(version) or not (directory / MODEL_CARD).is_file():
        raise RegistryError(f"{version!r} is not a registered model in {registry}")
    return directory


def cmd_models_show(args: argparse.Namespace) -> int:
    """``riskscore models show VERSION``: its model card."""
    from service.model.bundle import MODEL_CARD, MODEL_CARD_MD

    directory = _model_directory(_registry_dir(args), args.version)
    if args.json:
        print((directory / MODEL_CARD).read_text(encoding="utf-8"))
    else:
        print((directory / MODEL_CARD_MD).read_text(encoding="utf-8"))
    return 0


_FOLLOW = "a running service follows within RISKSCORE_MODEL_RELOAD_SECONDS (2 s by default)"


def cmd_models_promote(args: argparse.Namespace) -> int:
    """``riskscore models promote VERSION``: verify it, then make it live; 1 if refused."""
    from service.model.bundle import ModelBundle, ModelRefused
    from training.registry import promote

    registry = _registry_dir(args)
    directory = _model_directory(registry, args.version)
    try:
        ModelBundle.load(directory)  # what the service will do: refuse it here first
    except ModelRefused as exc:
        print(f"riskscore models promote: not promoted: {exc}", file=sys.stderr)
        return 1
    previous = promote(registry, directory.name)
    if args.json:
        _print_json({"live": directory.name, "previous": previous})
    else:
        print(f"{directory.name} is live (was {previous or 'none'}); {_FOLLOW}")
    return 0


def cmd_models_rollback(args: argparse.Namespace) -> int:
    """``riskscore models rollback``: make the model live before the current one live."""
    from training.registry import rollback

    live, previous = rollback(_registry_dir(args))
    if args.json:
        _print_json({"live": live, "previous": previous})
    else:
        print(f"rolled back: {live} is live again (was {previous or 'none'}); {_FOLLOW}")
    return 0


def cmd_models_shadow(args: argparse.Namespace) -> int:
    """``riskscore models shadow VERSION`` / ``--off``: verify it, then put it in shadow."""
    from service.model.bundle import ModelBundle, ModelRefused
    from training.registry import set_shadow

    registry = _registry_dir(args)
    if args.off == (args.version is not None):
        print("riskscore models shadow: give a VERSION or --off", file=sys.stderr)
        return 2
    version = None
    if args.version is not None:
        directory = _model_directory(registry, args.version)
        try:
            ModelBundle.load(directory)  # what the service will do: refuse it here first
        except ModelRefused as exc:
            print(f"riskscore models shadow: not in shadow: {exc}", file=sys.stderr)
            return 1
        version = directory.name
    previous = set_shadow(registry, version)
    if args.json:
        _print_json({"shadow": version, "previous": previous})
    elif version is None:
        print(f"no model in shadow (was {previous or 'none'}); {_FOLLOW}")
    else:
        print(f"{version} is in shadow (was {previous or 'none'}); {_FOLLOW}")
    return 0


def _add_models_commands(sub: Any) -> None:
    models = sub.add_parser(
        "models",
        help="list, show, promote, roll back and shadow registered models",
        description="The model registry (--registry, else RISKSCORE_MODEL_DIR, else models/): "
        "LATEST names the live model, SHADOW the model scored beside it (recorded in the "
        "decision log, never decided with), PROMOTIONS.json keeps the history. A running "
        "service follows LATEST and SHADOW within seconds, without a restart.",
    )
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    def action(name: str, func: Any, help_: str, description: str) -> argparse.ArgumentParser:
        parser = models_sub.add_parser(name, help=help_, description=description)
        parser.add_argument(
            "--registry", type=Path, help="the registry (RISKSCORE_MODEL_DIR, else models/)"
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.set_defaults(func=func)
        return parser

    action(
        "list",
        cmd_models_list,
        "every registered model: version, created, data period, test metrics, which is live",
        "Every registered model, oldest first: when it was made, the period of its training "
        "data (first training payment to last test payment), its held-out test figures, and "
        "LATEST beside the live one.",
    )
    show = action(
        "show",
        cmd_models_show,
        "print a model's card",
        "Print the model card (MODEL_CARD.md; with --json, model_card.json) of VERSION.",
    )
    show.add_argument("version", metavar="VERSION", help="a version, or LATEST for the live one")
    promote = action(
        "promote",
        cmd_models_promote,
        "make a registered model live",
        "Verify VERSION as the service will (card, hashes, catalogue), then point LATEST at "
        "it and record the promotion; a model that fails the checks is not promoted (exit 1).",
    )
    promote.add_argument("version", metavar="VERSION", help="the version to make live")
    action(
        "rollback",
        cmd_models_rollback,
        "make the model live before the current one live again",
        "Go back to the model that was live before the current one (the promotion history, "
        "PROMOTIONS.json); a second rollback goes one further back.",
    )
    shadow = action(
        "shadow",
        cmd_models_shadow,
        "score every payment with a second model beside the live one, or stop (--off)",
        "Verify VERSION as the service will, then name it in SHADOW: the running service "
        "scores every payment with it beside the live model and writes its version and "
        "probability into the decision log (and so the export), never into the decision. "
        "--off removes the shadow model. A model that fails the checks is refused (exit 1).",
    )
    shadow.add_argument("version", metavar="VERSION", nargs="?", help="the version to shadow")
    shadow.add_argument("--off", action="store_true", help="no model in shadow")


def build_parser() -> argparse.ArgumentParser:
    """The ``riskscore`` argument parser, every command registered."""
    parser = argparse.ArgumentParser(
        prog="riskscore",
        description="Fraud and risk scoring for a payment gateway: serve, simulate, train, "
        "evaluate, backtest, replay, export, and check rule files.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_serve_command(sub)
    add_archive_command(sub)

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

    add_reference_command(sub)

    assets = sub.add_parser("assets", help="the files the service's pages load")
    assets_sub = assets.add_subparsers(dest="assets_command", required=True, metavar="ACTION")
    assets_update = assets_sub.add_parser(
        "update",
        help="fetch the pinned UI files from npm (make assets)",
        description="npm pack each package pinned in service/api/assets/sources.json, copy "
        "its files into service/api/assets, and rewrite the pins. NAME@VERSION moves a "
        "package to another version first.",
    )
    assets_update.add_argument("packages", nargs="*", metavar="NAME@VERSION")
    assets_update.add_argument("--npm", default="npm", help="the npm command (npm)")
    assets_update.set_defaults(func=cmd_assets_update)
    assets_check = assets_sub.add_parser(
        "check", help="compare the shipped UI files with their pinned SHA-256"
    )
    assets_check.set_defaults(func=cmd_assets_check)

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
    simulate.add_argument(
        "--realism",
        choices=("hard", "easy"),
        default="hard",
        help="hard (default): fraud that imitates legitimate payers, drift, odd legitimate "
        "customers, labels late, missing or wrong; easy: every pattern obvious, every fraud "
        "labelled",
    )
    simulate.add_argument("--json", action="store_true", help="print one JSON object")
    simulate.set_defaults(func=cmd_simulate)

    train = sub.add_parser(
        "train",
        help="build features from a log, train, evaluate and register a model",
        description="Rows before --since, and rows without a label, are history only: they "
        "feed the features but are not training examples. A production export carries only "
        "fraud and chargeback labels (nobody reports a payment as fine): train it with "
        "--legit-after DAYS, so that a payment without a fraud label that is older than DAYS "
        "counts as legitimate; younger payments are then history only, labelled or not. "
        "The new model goes live (LATEST) unless --no-promote, and only when the promotion "
        "gate finds it not worse than the live model on the new model's held-out test period "
        "(average precision, and recall at the live model's decline rate there); otherwise it "
        "is registered, not promoted, the reason is printed and the exit code is 3 (--force "
        "promotes anyway).",
    )
    train.add_argument("--log", type=Path, help="transaction log with labels")
    train.add_argument(
        "--from-archive",
        action="store_true",
        help="train on the decision archive (PostgreSQL: every retained decision and its "
        "labels, up to --until) instead of --log",
    )
    train.add_argument("--database-url", help="the archive (default RISKSCORE_DATABASE_URL)")
    train.add_argument("--until", help="with --from-archive: decisions before this time")
    train.add_argument("--since", help="first training example time (RFC 3339)")
    train.add_argument(
        "--legit-after",
        type=float,
        metavar="DAYS",
        help="an unlabelled payment older than DAYS at --as-of is legitimate (chargebacks "
        "come within about 120 days for cards, days for UPI and wallets: choose the longest "
        "window your methods have; see README)",
    )
    train.add_argument(
        "--as-of",
        metavar="TS",
        help="the moment maturity is counted from (RFC 3339; default: the log's last "
        "payment or label)",
    )
    train.add_argument(
        "--no-promote",
        action="store_true",
        help="register the model without making it live (LATEST stays as it is)",
    )
    train.add_argument(
        "--force",
        action="store_true",
        help="promote even when the promotion gate finds the new model worse than the live one",
    )
    train.add_argument(
        "--no-refit",
        action="store_true",
        help="ship the model fitted on the train period, not the refit on every mature "
        "labelled row (the held-out figures are the same either way)",
    )
    train.add_argument("--refit-sample", **REFIT_SAMPLE_ARGUMENT)
    train.add_argument(
        "--exclude-known-fraud",
        action="store_true",
        help="leave out payments whose card, customer, device, email or account already had "
        "a confirmed fraud when scored (lists and rules stop those)",
    )
    train.add_argument(
        "--features",
        metavar="SPEC",
        default=AUTO_FEATURES,
        help=FEATURES_HELP.replace("default: the set", "the set default is the one")
        + "; or auto, the default: weigh each candidate set on the validation period and "
        "keep the best by average precision, a near tie going to the smaller set, and the "
        "first candidate (default) when validation holds too few frauds "
        "(MIN_VALIDATION_FRAUDS); the model card's feature_choice (and --json) says what was "
        "chosen and why. --features default trains on the default set without choosing",
    )
    train.add_argument(
        "--candidate",
        metavar="SPEC",
        action="append",
        help="with --features auto: a candidate feature set (repeatable; default: the list "
        "AUTO_CANDIDATES in training/feature_sets.py)",
    )
    train.add_argument("--registry", type=Path, default=Path("models"), help="default models/")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--decline-rate", type=float, default=0.01, help="target decline rate (default 0.01)"
    )
    train.add_argument("--json", action="store_true", help="print one JSON object")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser(
        "evaluate",
        help="score a labelled log with the registered model and rules, or compare models",
        description="Without --model: the live model, the rules and both combined over the "
        "log's labelled payments (--since to start later). With --model A [--model B]: the "
        "models side by side on the same labelled payments, by default the held-out test "
        "period of A's model card (--since/--until choose another); a warning says when a "
        "model is evaluated over payments it was fitted on. --plots DIR writes roc.png "
        "(false-positive rate on a log axis), pr.png and calibration.png.",
    )
    evaluate.add_argument("--log", type=Path, required=True)
    evaluate.add_argument("--registry", type=Path, default=Path("models"))
    evaluate.add_argument(
        "--model",
        action="append",
        metavar="VERSION",
        help="a registered version (or LATEST, SHADOW); twice to compare two models",
    )
    evaluate.add_argument("--until", help="with --model: the period's last payment (RFC 3339)")
    evaluate.add_argument("--plots", type=Path, help="with --model: folder for the PNG plots")
    evaluate.add_argument("--rules", type=Path, help="rule directory (default: shipped packs)")
    evaluate.add_argument("--out", type=Path, help="folder for pr.png and roc.png")
    evaluate.add_argument(
        "--since", help="score only payments from this time (RFC 3339); earlier rows are history"
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(func=cmd_evaluate)

    walkforward = sub.add_parser(
        "walkforward",
        help="walk-forward validation: train on the past, test on the next period, repeat",
        description="Cut the log's last --test-share of time into --folds periods; for each, "
        "in time order, train as `riskscore train` does on everything before it (labels as "
        "known at its start: frauds whose label had arrived, legitimate once older than "
        "--legit-after days) and score the period. Prints ROC AUC, average precision, recall "
        "at 1 %% decline and CP@100 per fold with mean and spread, also on payments of "
        "entities with no confirmed fraud yet, and the share of each fraud pattern caught.",
    )
    walkforward.add_argument("--log", type=Path, required=True, help="labelled transaction log")
    walkforward.add_argument("--folds", type=int, default=3, help="test periods (default 3)")
    walkforward.add_argument(
        "--test-share",
        type=float,
        default=0.5,
        help="share of the log's time span cut into test periods (default 0.5)",
    )
    walkforward.add_argument(
        "--legit-after",
        type=float,
        default=14.0,
        metavar="DAYS",
        help="a training payment without a fraud label is legitimate once this old (default 14)",
    )
    walkforward.add_argument(
        "--minimal",
        action="store_true",
        help="keep only the contract's required columns (and the labels) first",
    )
    walkforward.add_argument(
        "--exclude-known-fraud",
        action="store_true",
        help="train without payments of entities already confirmed fraudulent",
    )
    walkforward.add_argument("--features", metavar="SPEC", help=FEATURES_HELP)
    walkforward.add_argument(
        "--compare",
        metavar="SPEC",
        action="append",
        help="also run this feature set on the same folds (repeatable; features built once) "
        "and print each beside --features with its AP and recall differences per fold",
    )
    walkforward.add_argument("--refit-sample", **REFIT_SAMPLE_ARGUMENT)
    walkforward.add_argument("--seed", type=int, default=0)
    walkforward.add_argument("--json", action="store_true", help="print one JSON object")
    walkforward.set_defaults(func=cmd_walkforward)

    backtest = sub.add_parser(
        "backtest",
        help="evaluate a rule set over a labelled log: hits, precision, recall, approval rate",
    )
    backtest.add_argument("--log", type=Path, required=True)
    backtest.add_argument(
        "--rules",
        type=Path,
        help="rule directory (default: shipped packs); with --against, the draft",
    )
    backtest.add_argument(
        "--against",
        type=Path,
        metavar="DIR",
        help="the live rule directory to compare the draft (--rules) with: per rule, per "
        "vertical and in total, payments and USD the draft newly stops (review or decline) "
        "and newly lets through, fraud and legitimate apart",
    )
    backtest.add_argument("--since", help="with --against: payments from this time (RFC 3339)")
    backtest.add_argument("--until", help="with --against: payments before this time")
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
    export.add_argument(
        "--from-archive",
        action="store_true",
        help="read the decision archive (PostgreSQL) instead of the Redis streams; "
        "--since/--until then select decisions by when they were logged",
    )
    export.add_argument(
        "--database-url",
        help="the archive (default RISKSCORE_DATABASE_URL); implies --from-archive",
    )
    export.add_argument("--until", help="with --from-archive: decisions before this time")
    export.add_argument("--json", action="store_true", help="print one JSON object")
    export.set_defaults(func=cmd_export)
    _add_labels_commands(sub)
    _add_models_commands(sub)
    return parser


# The commands that compute features offline: they check emails against the operator's
# disposable-mailbox list too, as the service does, when RISKSCORE_DISPOSABLE_DOMAINS names one.
OFFLINE_FEATURE_COMMANDS = frozenset({"train", "evaluate", "backtest", "walkforward"})


def _use_operator_domains() -> None:
    from service.reference.tables import read_disposable_domains, use_disposable_domains

    if path := os.environ.get("RISKSCORE_DISPOSABLE_DOMAINS"):
        use_disposable_domains(read_disposable_domains(Path(path).read_bytes(), source=path))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``riskscore`` command; bad input is a message and exit 2, not a traceback."""
    args = build_parser().parse_args(argv)
    try:
        if args.command in OFFLINE_FEATURE_COMMANDS:
            _use_operator_domains()
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
