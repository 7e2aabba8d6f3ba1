"""What the PAN screen and the whole request decoding cost on hostile bodies.

The worst 64 KiB bodies we could construct for the screen, beside a normal score body.

For each body class, in-process and one call at a time: ``screen`` is the PAN screen alone
(``service.api.pan``: pre-check, then the scan when the pre-check cannot rule a PAN out,
and the naming of the field when one is found); ``decode`` is ``decode_score_request`` on
the raw bytes (JSON decode, depth check, PAN screen, printable check, field checks), the
CPU a request of that body costs the event loop before it is refused or scored. Prints
the median and the worst of ``--repeat`` calls in milliseconds of this thread's CPU time
(``time.thread_time``), so that other load on the machine does not count, only what it
does to caches and clocks.

    .venv/bin/python benchmarks/hostile_bodies.py [--repeat 30] [--only NAME] [--json]

Run with ``PYTHONPATH=<an older checkout>`` to time that checkout's ``decode`` (its
``screen`` column is empty when it has no ``service.api.pan``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from service.api.schemas import decode_score_request
from service.errors import InvalidRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from micro import body as score_body

LIMIT = 64 * 1024  # the largest body the service reads; larger ones are a 413
PAN = "4111111111111111"


def fill(unit: str, *, key: str = "note", base: dict[str, Any] | None = None) -> bytes:
    """``base`` (an empty object by default) plus ``key``: ``unit`` repeated up to 64 KiB."""
    base = dict(base or {})
    overhead = len(msgspec.json.encode({**base, key: ""}))
    size = len(msgspec.json.encode(unit)) - 2
    base[key] = unit * ((LIMIT - overhead) // size)
    return msgspec.json.encode(base)


def array(item: bytes) -> bytes:
    """``{"x": [item, item, …]}`` up to 64 KiB."""
    count = (LIMIT - 10) // (len(item) + 1)
    return b'{"x": [' + b",".join([item] * count) + b"]}"


def normal() -> bytes:
    """A score body of the benchmark traffic (``micro.body``)."""
    return score_body(random.Random(7), "hostile-normal-1")


def normal_dict() -> dict[str, Any]:
    """``normal()`` decoded."""
    return msgspec.json.decode(normal())


BODIES: dict[str, Callable[[], bytes]] = {
    "normal score body": normal,
    "normal body + 64 KiB of prose": lambda: fill(
        "The customer called about order 12 of 2026-11-20; refund approved. ", base=normal_dict()
    ),
    '"1 1 1 …"': lambda: fill("1 "),
    '"1111 1111 …"': lambda: fill("1111 "),
    "13-digit integers": lambda: array(b"1111111111111"),
    "13-digit strings": lambda: array(b'"1111111111111"'),
    "mixed separators 1-1_1.1:1/1,": lambda: fill("1-1_1.1:1/1,"),
    "separator runs 1 - 1 - …": lambda: fill("1 - "),
    "fullwidth digits, spaces": lambda: fill("１ "),
    "Arabic-Indic digits, zero-width": lambda: fill("١\u200b"),
    "escaped digits \\u0031": lambda: b'{"note": "' + b"\\u0031 " * ((LIMIT - 12) // 7) + b'"}',
    "clock times 11:11:11.11": lambda: fill("11:11:11.11 "),
    "glued tokens a4111…": lambda: fill(f"a{PAN} "),
    "hex tokens with digit runs": lambda: array(b'"a4111111111111111ffff"'),
    "many small strings": lambda: array(b'"1"'),
    "PAN after 5,000 nodes": lambda: (
        b'{"x": [' + b",".join([b"1"] * 5000) + b'], "note": "' + PAN.encode() + b'"}'
    ),
}


def timed(fn: Callable[[bytes], Any], raw: bytes, repeat: int) -> dict[str, float]:
    """Median and worst CPU time of ``repeat`` calls of ``fn(raw)``, in ms."""
    spent = []
    for _ in range(repeat):
        started = time.thread_time()
        fn(raw)
        spent.append(time.thread_time() - started)
    return {
        "median_ms": round(statistics.median(spent) * 1e3, 3),
        "max_ms": round(max(spent) * 1e3, 3),
    }


def _decode(raw: bytes) -> None:
    with contextlib.suppress(InvalidRequest):
        decode_score_request(raw)


def _screen_for(raw: bytes) -> Callable[[bytes], Any] | None:
    """The PAN screen of this checkout as the decoder runs it on ``raw``, or None."""
    try:
        from service.api.pan import find_pan, precheck
    except ImportError:
        return None
    tree = msgspec.json.Decoder(float_hook=Decimal).decode(raw)

    def screen(body: bytes) -> str | None:
        return find_pan(body, tree) if precheck(body)[0] else None

    return screen


def main() -> int:
    """Time every body class and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="calls per body (default 30)")
    parser.add_argument("--only", help="only the body classes whose name contains this")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    for name, make in BODIES.items():
        if args.only and args.only not in name:
            continue
        raw = make()
        assert len(raw) <= LIMIT, (name, len(raw))
        row: dict[str, Any] = {"bytes": len(raw)}
        screen = _screen_for(raw)
        if screen is not None:
            for _ in range(3):
                screen(raw)
            row["screen"] = timed(screen, raw, args.repeat)
            row["pan_found"] = screen(raw) is not None
        for _ in range(3):
            _decode(raw)
        row["decode"] = timed(_decode, raw, args.repeat)
        report[name] = row
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{'body':34} {'bytes':>6}  {'screen median / max ms':>22}  {'decode median / max ms':>22}"
    )
    for name, row in report.items():
        screen_cell = (
            f"{row['screen']['median_ms']:>9.3f} / {row['screen']['max_ms']:>8.3f}"
            if "screen" in row
            else f"{'-':>20}"
        )
        decode_cell = f"{row['decode']['median_ms']:>9.3f} / {row['decode']['max_ms']:>8.3f}"
        print(f"{name:34} {row['bytes']:>6}  {screen_cell:>22}  {decode_cell:>22}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
