"""``make run``'s development settings (``training.dev_env``), read as ``make run`` reads them.

The file is ``source``d by bash (the Makefile's ``run``, the README's ``set -a; source``),
so it is checked through bash, then through ``Settings.from_env`` and the console's keys:
the analyst and admin keys sign in under their display names, never a key's identity.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.console.session import ConsoleKeys
from service.settings import Settings
from training import dev_env

VARIABLES = ("RISKSCORE_SECRET", "RISKSCORE_API_KEYS", "SCORE_KEY", "ADMIN_KEY", "ANALYST_KEY")


def sourced(path: Path) -> dict[str, str]:
    """The variables bash sets from ``path`` with ``set -a; source`` (as ``make run``)."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.fail("bash is needed: `make run` sources .run/env with it")
    script = 'set -a && source "$1" && set +a && printf "%s\\0" ' + " ".join(
        f'"${{{name}}}"' for name in VARIABLES
    )
    done = subprocess.run(
        [bash, "-c", script, "bash", str(path)], capture_output=True, check=False, env={}
    )
    assert done.returncode == 0, done.stderr.decode()
    values = done.stdout.decode().split("\0")[: len(VARIABLES)]
    return dict(zip(VARIABLES, values, strict=True))


def test_make_runs_keys_sign_in_to_the_console_under_a_persons_name(tmp_path: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "training.dev_env"], capture_output=True, text=True, check=True
    )
    env_file = tmp_path / "env"
    env_file.write_text(made.stdout)
    env = sourced(env_file)
    assert all(env.values()), env.keys()
    settings = Settings.from_env(env)
    assert settings.api_keys[env["ANALYST_KEY"]] == {"analyst"}
    assert settings.api_keys[env["ADMIN_KEY"]] == {"admin", "score", "feedback"}
    assert settings.api_keys[env["SCORE_KEY"]] == {"score"}
    keys = ConsoleKeys(
        settings.secret, settings.api_keys, settings.api_key_merchants, settings.api_key_names
    )
    for variable, role in (("ANALYST_KEY", "analyst"), ("ADMIN_KEY", "admin")):
        fingerprint = keys.fingerprint(env[variable])
        assert fingerprint is not None, f"{variable} cannot open the console"
        analyst = keys.analyst({"key": fingerprint, "at": 0}, now=1)
        assert analyst is not None
        assert analyst.name == dev_env.DISPLAY_NAMES[role] != analyst.identity
    assert keys.fingerprint(env["SCORE_KEY"]) is None  # a gateway's key: not the console's


def test_each_run_makes_new_keys_and_a_new_secret() -> None:
    first, second = dev_env.lines(), dev_env.lines()
    assert not set(first[1:6]) & set(second[1:6])
