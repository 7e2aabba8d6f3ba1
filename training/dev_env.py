"""Print a development environment file: a fresh secret and one API key per role.

``make run`` writes it to ``.run/env`` once; delete that file to get new keys. The
analyst key (``ANALYST_KEY``) signs in to the console at ``/console``.
"""

from __future__ import annotations

import secrets
import sys


def main() -> None:
    """Print a development secret and API keys as ``.run/env`` lines."""
    roles = ("score", "feedback", "analyst", "admin")
    keys = {role: f"dev-{role}-{secrets.token_urlsafe(18)}" for role in roles}
    print("# riskscore development settings, made by `make run`; not for production")
    print(f"RISKSCORE_SECRET={secrets.token_urlsafe(32)}")
    spec = ",".join(
        [
            f"{keys['score']}=score",
            f"{keys['feedback']}=feedback",
            f"{keys['analyst']}=analyst",
            f"{keys['admin']}=admin+score+feedback",
        ]
    )
    print(f"RISKSCORE_API_KEYS={spec}")
    print(f"SCORE_KEY={keys['score']}")
    print(f"ADMIN_KEY={keys['admin']}")
    print(f"ANALYST_KEY={keys['analyst']}")
    print("RISKSCORE_SPOOL_PATH=.run/decision-spool.jsonl")
    print(
        f"wrote a development secret and keys to .run/env; try: "
        f"curl -H 'X-API-Key: {keys['score']}' ...",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
