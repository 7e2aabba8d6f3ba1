"""Print a development environment file: a fresh secret and one API key per role.

``make run`` writes it to ``.run/env`` once; delete that file to get new keys. The
analyst key (``ANALYST_KEY``) signs in to the console at ``/console``; it and the admin
key carry display names (``key=analyst(Dev Analyst)``), so the console and the reviews
name a person rather than a key's identity. The file is read with ``source``, so a value
holding spaces or parentheses is shell-quoted.
"""

from __future__ import annotations

import secrets
import shlex
import sys

# the people behind the development keys, as the console shows them (README "Keys with a
# display name"); the score and feedback keys are a gateway's, so they stay unnamed
DISPLAY_NAMES = {"analyst": "Dev Analyst", "admin": "Dev Admin"}
_GRANTS = {
    "score": "score",
    "feedback": "feedback",
    "analyst": "analyst",
    "admin": "admin+score+feedback",
}


def lines() -> list[str]:
    """The ``.run/env`` lines: a fresh secret, the keys' spec, and each key on its own."""
    keys = {role: f"dev-{role}-{secrets.token_urlsafe(18)}" for role in _GRANTS}
    spec = ",".join(
        f"{keys[role]}={grant}" + (f"({DISPLAY_NAMES[role]})" if role in DISPLAY_NAMES else "")
        for role, grant in _GRANTS.items()
    )
    return [
        "# riskscore development settings, made by `make run`; not for production",
        f"RISKSCORE_SECRET={secrets.token_urlsafe(32)}",
        f"RISKSCORE_API_KEYS={shlex.quote(spec)}",
        f"SCORE_KEY={keys['score']}",
        f"ADMIN_KEY={keys['admin']}",
        f"ANALYST_KEY={keys['analyst']}",
        "RISKSCORE_SPOOL_PATH=.run/decision-spool.jsonl",
    ]


def main() -> None:
    """Print a development secret and API keys as ``.run/env`` lines."""
    env = lines()
    print("\n".join(env))
    score_key = next(line for line in env if line.startswith("SCORE_KEY=")).partition("=")[2]
    print(
        f"wrote a development secret and keys to .run/env; try: "
        f"curl -H 'X-API-Key: {score_key}' ...; in the console ANALYST_KEY is "
        f"{DISPLAY_NAMES['analyst']!r} and ADMIN_KEY {DISPLAY_NAMES['admin']!r}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
