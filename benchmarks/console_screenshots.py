r"""Screenshots of the console's pages, for the README and the issue's note.

Runs the console's browser test (``tests/reliability/test_console_browser.py``: a private
Redis, a throwaway PostgreSQL database, the service, Debian's Chromium) with
``RISKSCORE_CONSOLE_SCREENSHOTS`` set, so it saves one PNG per page as it goes: sign-in,
queue, review, decision, decision search. Nothing is drawn by hand.

    .venv/bin/python benchmarks/console_screenshots.py [--out docs/console]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST = "tests/reliability/test_console_browser.py"


def shrink(png: Path) -> None:
    """Store the screenshot with a 256-colour palette: a third of the size, text unchanged."""
    from PIL import Image  # Pillow, which matplotlib (the train extra) brings

    with Image.open(png) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(png, optimize=True)


def main() -> int:
    """Run the browser test with screenshots on; list what it wrote."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "console")
    args = parser.parse_args()
    out = args.out.resolve()
    env = {**os.environ, "RISKSCORE_CONSOLE_SCREENSHOTS": str(out)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST], cwd=REPO, env=env
    )
    for png in sorted(out.glob("*.png")):
        shrink(png)
        print(
            f"{png.relative_to(REPO) if png.is_relative_to(REPO) else png}"
            f"  {png.stat().st_size // 1024} KiB"
        )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
