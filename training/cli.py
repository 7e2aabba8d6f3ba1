"""The ``riskscore`` command line: one entry point for operators and analysts.

Sub-commands import what they need when they run, so ``riskscore --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
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

    for extend in _EXTENSIONS:
        extend(sub)
    return parser


# Sub-commands of the training side register themselves here (simulate, train, …).
_EXTENSIONS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
