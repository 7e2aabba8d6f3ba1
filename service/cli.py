"""``riskscore serve``, ``archive`` and ``reference check``: the operators' commands.

The service's own commands, needing nothing beyond the service's dependencies. The
``riskscore`` entry point (``training.cli``) offers it beside the offline commands;
``python -m service.cli serve`` runs it where the ``train`` extra is not installed (and
``python -m service.cli archive``, ``python -m service.cli reference check``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.settings import DEFAULT_FX_RATES, Settings

# prometheus_client's multiprocess directory (service.telemetry.metrics), named here so that
# this process does not import prometheus_client before the variable is settled: the library
# picks its mode once, on import.
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# ``riskscore archive``'s defaults: service.archive.archiver's BATCH and LINGER_MS,
# service.archive.process's PROGRESS_SECONDS and STOP_TIMEOUT
ARCHIVE_DEFAULTS = (1000, 200, 10.0, 30.0)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve ``service.app`` with the settings from the environment; 2 without a secret."""
    settings = Settings.from_env(os.environ)
    if not settings.secret:
        print("RISKSCORE_SECRET is not set; `make run` writes a development one to .run/env")
        return 2
    # One worker keeps its metrics in memory. Several share theirs through files in a fresh
    # directory of this server's own (prometheus_client's multiprocess mode, which the
    # workers, started after this, read from the environment), removed when it stops:
    # files left by an earlier server would be counted again.
    for name in (MULTIPROCESS_DIR_ENV, MULTIPROCESS_DIR_ENV.lower()):
        os.environ.pop(name, None)
    shared_dir = None
    if args.workers > 1:
        shared_dir = tempfile.mkdtemp(prefix="riskscore-metrics-")
        os.environ[MULTIPROCESS_DIR_ENV] = shared_dir
    try:
        _run_uvicorn(args, settings)
    finally:
        if shared_dir is not None:
            shutil.rmtree(shared_dir, ignore_errors=True)
    return 0


def _run_uvicorn(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from service.api.connections import GuardedProtocol

    uvicorn.run(
        "service.app:app_from_env",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers,
        log_level=settings.log_level.lower(),
        access_log=False,
        # Nothing reads the client address or scheme, so X-Forwarded-* rewriting is
        # per-request work for nothing; the Server header only advertises the stack.
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        # Slow and silent clients: header and body time limits, a header size limit and a
        # connection cap (service.api.connections); idle kept-alive connections closed.
        http=GuardedProtocol,
        timeout_keep_alive=settings.keep_alive_seconds,  # type: ignore[arg-type]
    )


def cmd_archive(args: argparse.Namespace) -> int:
    """Run the archiver as a process of its own until SIGTERM/SIGINT; 2 on bad configuration."""
    import asyncio

    from service.archive.process import run_archive_process
    from service.errors import ConfigurationError
    from service.telemetry.log_format import configure_logging

    try:
        settings = Settings.from_env(os.environ)
    except ConfigurationError as exc:
        print(f"riskscore archive: {exc}", file=sys.stderr)
        return 2
    if not settings.database_url:
        print(
            "riskscore archive: RISKSCORE_DATABASE_URL is not set: there is no archive to fill",
            file=sys.stderr,
        )
        return 2
    configure_logging(settings.log_level)
    if args.retry_set_aside:
        from service.archive.process import retry_set_aside

        archived, kept = asyncio.run(retry_set_aside(settings))
        print(f"{archived} set-aside entries archived, {kept} still set aside")
        return 1 if kept else 0
    asyncio.run(
        run_archive_process(
            settings,
            batch=args.batch,
            linger_ms=args.linger_ms,
            consumer=args.consumer,
            progress_seconds=args.progress_seconds,
            stop_timeout=args.stop_timeout,
        )
    )
    return 0


def cmd_reference_check(args: argparse.Namespace) -> int:
    """Check the FX table and the extra domain list as the service would; 1 when refused."""
    from service.errors import ReferenceDataError
    from service.reference.tables import (
        LIBRARY_DISPOSABLE_DOMAINS,
        read_disposable_domains,
        read_fx_rates,
        utc_today,
    )

    fx_path = Path(args.fx or os.environ.get("RISKSCORE_FX_RATES") or DEFAULT_FX_RATES)
    extra = args.disposable or os.environ.get("RISKSCORE_DISPOSABLE_DOMAINS")
    try:
        max_age = float(args.max_age_days or os.environ.get("RISKSCORE_FX_MAX_AGE_DAYS") or 4)
    except ValueError:
        print(
            "riskscore reference check: RISKSCORE_FX_MAX_AGE_DAYS is not a number", file=sys.stderr
        )
        return 2
    today = utc_today()
    result: dict[str, object] = {}
    failed = False
    try:
        table = read_fx_rates(fx_path.read_bytes(), source=str(fx_path), today=today)
        age = (today - table.as_of).days
        result["fx_rates"] = {
            "path": str(fx_path),
            "ok": True,
            "as_of": table.as_of_text,
            "age_days": age,
            "currencies": len(table.currencies),
            "warning": f"older than {max_age:g} days" if age > max_age else None,
        }
    except (OSError, ReferenceDataError) as exc:
        failed = True
        result["fx_rates"] = {"path": str(fx_path), "ok": False, "problem": _problem(exc)}
    if extra:
        path = Path(extra)
        try:
            domains = read_disposable_domains(path.read_bytes(), source=str(path))
            result["disposable_domains"] = {
                "path": str(path),
                "ok": True,
                "domains": len(domains),
                "new": len(domains - LIBRARY_DISPOSABLE_DOMAINS),
            }
        except (OSError, ReferenceDataError) as exc:
            failed = True
            result["disposable_domains"] = {
                "path": str(path),
                "ok": False,
                "problem": _problem(exc),
            }
    if args.json:
        print(json.dumps({"ok": not failed, **result}, indent=2))
        return 1 if failed else 0
    fx = result["fx_rates"]
    assert isinstance(fx, dict)
    if fx["ok"]:
        print(
            f"FX rates {fx['path']}: valid, {fx['currencies']} currencies "
            f"as of {fx['as_of']} ({fx['age_days']} days old)"
        )
        if fx["warning"]:
            print(f"  warning: {fx['warning']} (RISKSCORE_FX_MAX_AGE_DAYS)")
    else:
        print(f"FX rates {fx['path']}: refused: {fx['problem']}", file=sys.stderr)
    listed = result.get("disposable_domains")
    if isinstance(listed, dict):
        if listed["ok"]:
            print(
                f"disposable domains {listed['path']}: valid, {listed['domains']} domains "
                f"({listed['new']} not in the library's list of {len(LIBRARY_DISPOSABLE_DOMAINS)})"
            )
        else:
            print(
                f"disposable domains {listed['path']}: refused: {listed['problem']}",
                file=sys.stderr,
            )
    else:
        print(
            f"disposable domains: the library's list alone ({len(LIBRARY_DISPOSABLE_DOMAINS)}); "
            "no extra list given (--disposable, RISKSCORE_DISPOSABLE_DOMAINS)"
        )
    return 1 if failed else 0


def _workers(text: str) -> int:
    """``--workers``: a whole number from 1 to 256."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"from 1 to 256, not {value}")
    return value


def _positive(kind: type) -> Any:
    """An ``argparse`` type: a number of ``kind`` greater than 0."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
        return value

    return parse


def _problem(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"cannot read: {exc.strerror or exc}"
    return str(exc)


def add_serve_command(sub: Any) -> None:
    """Register ``serve`` on an ``argparse`` sub-parsers object."""
    serve = sub.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the HTTP scoring service. Configuration comes from RISKSCORE_* "
        "environment variables (see README); options here override host and port.",
    )
    serve.add_argument("--host", help="address to listen on (RISKSCORE_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (RISKSCORE_PORT, 8000)")
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="worker processes sharing the port (default 1); /metrics from any of them "
        "counts them all. About one per core the service has to itself (README: Deployment)",
    )
    serve.set_defaults(func=cmd_serve)


def add_archive_command(sub: Any) -> None:
    """Register ``archive`` on an ``argparse`` sub-parsers object.

    Its defaults are the archiver's (``ARCHIVE_DEFAULTS``, checked equal by a test), named
    here so that building the parser imports neither redis nor asyncpg.
    """
    batch, linger_ms, progress_seconds, stop_timeout = ARCHIVE_DEFAULTS
    archive = sub.add_parser(
        "archive",
        help="run the decision archiver as a process of its own",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Archive the decision and labels streams of RISKSCORE_REDIS_URL (one Redis, or
redis+cluster://) into the PostgreSQL of RISKSCORE_DATABASE_URL, exactly once, and
trim the streams below what is archived. The same archiver the service runs inside
itself by default; run this beside services started with RISKSCORE_ARCHIVER=external
so that archiving takes no time from scoring's event loop (README: The decision
archive). Several may run at once: they share the work (one consumer group).

Reads RISKSCORE_REDIS_URL, RISKSCORE_REDIS_PREFIX, RISKSCORE_DATABASE_URL,
RISKSCORE_ARCHIVE_RETENTION_DAYS and RISKSCORE_LOG_LEVEL. Logs progress and lag as
JSON lines. SIGTERM or SIGINT: finish the round in hand (acknowledged only after its
commit), trim, exit 0; a second signal stops at once (what was read stays pending and
is archived later, still once). Exit 2: bad or missing configuration.""",
    )
    archive.add_argument(
        "--batch",
        type=_positive(int),
        default=batch,
        help=f"entries per stream per round (default {batch})",
    )
    archive.add_argument(
        "--linger-ms",
        type=int,
        default=linger_ms,
        help="after a round that found less than a batch, wait this long before the next, "
        f"so that entries gather (default {linger_ms})",
    )
    archive.add_argument(
        "--consumer",
        help="this archiver's name in the consumer group (default: host, pid and a random "
        "part); a stable name lets a restarted archiver take its unacknowledged entries "
        "back at once rather than after 30 s",
    )
    archive.add_argument(
        "--progress-seconds",
        type=_positive(float),
        default=progress_seconds,
        help=f"log progress and lag this often (default {progress_seconds:g})",
    )
    archive.add_argument(
        "--stop-timeout",
        type=_positive(float),
        default=stop_timeout,
        help="on SIGTERM, give the round in hand this long before cancelling it "
        f"(default {stop_timeout:g} s)",
    )
    archive.add_argument(
        "--retry-set-aside",
        action="store_true",
        help="instead of archiving: try the entries set aside (README: The decision archive) "
        "again, once, oldest first, up to 10,000; print how many were archived and how many "
        "are still set aside (with their new error); exit 1 when some are",
    )
    archive.set_defaults(func=cmd_archive)


def add_reference_command(sub: Any) -> None:
    """Register ``reference check`` on an ``argparse`` sub-parsers object."""
    reference = sub.add_parser("reference", help="work with reference tables")
    reference_sub = reference.add_subparsers(
        dest="reference_command", required=True, metavar="ACTION"
    )
    ref_check = reference_sub.add_parser(
        "check",
        help="validate the FX table and the extra disposable-mailbox list",
        description="Check the files as the service does before it takes them; exit 1 "
        "naming file, line and problem when either would be refused.",
    )
    ref_check.add_argument("--fx", help="FX table (RISKSCORE_FX_RATES, the package's)")
    ref_check.add_argument(
        "--disposable", help="extra disposable-mailbox domains (RISKSCORE_DISPOSABLE_DOMAINS)"
    )
    ref_check.add_argument(
        "--max-age-days",
        type=float,
        help="warn when the FX table is older (RISKSCORE_FX_MAX_AGE_DAYS, 4)",
    )
    ref_check.add_argument("--json", action="store_true", help="print one JSON object")
    ref_check.set_defaults(func=cmd_reference_check)


def main(argv: Sequence[str] | None = None) -> int:
    """The service-only command line: ``serve``, ``archive``, ``reference check``."""
    parser = argparse.ArgumentParser(prog="python -m service.cli")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve_command(sub)
    add_archive_command(sub)
    add_reference_command(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
