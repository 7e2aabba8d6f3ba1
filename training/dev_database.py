"""Find or start the development PostgreSQL, create the archive's database, apply its schema.

``make run`` (and ``.ci/run``) call it and read the URL it prints on its last line:

1. ``RISKSCORE_DATABASE_URL`` when set and answering;
2. else PostgreSQL on 127.0.0.1:5432 (as ``postgres``, then ``root``), database
   ``riskscore`` (made when missing);
3. else a private server under ``.run/pg`` (Debian's ``initdb`` and ``pg_ctl`` from
   ``/usr/lib/postgresql/<version>/bin``) on 127.0.0.1:55432, trust authentication on
   loopback only, started now and left running (``pg_ctl -D .run/pg stop`` stops it). As
   root, it runs as the ``postgres`` user (PostgreSQL refuses to run as root).

Then the migrations are applied (``service.archive.schema``). Exit status 2, with the
reason, when none of these works.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from service.archive.schema import apply_migrations, maintain_partitions

DATABASE = "riskscore"
PRIVATE_PORT = 55432
PRIVATE_DIR = Path(".run/pg")


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


async def _answers(url: str) -> bool:
    try:
        connection = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True


async def _server_url() -> str | None:
    """A PostgreSQL server that answers: the environment's, loopback's, else None."""
    if url := os.environ.get("RISKSCORE_DATABASE_URL"):
        return url if await _answers(url) else None
    for user in ("postgres", "root"):
        url = f"postgresql://{user}@127.0.0.1:5432/postgres"
        if await _answers(url):
            return url
    url = f"postgresql://postgres@127.0.0.1:{PRIVATE_PORT}/postgres"
    return url if await _answers(url) else None


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _start_private() -> str:
    """Start (making it first if needed) the private server under ``.run/pg``."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        raise SystemExit(
            "no PostgreSQL found: apt-get install postgresql, or set RISKSCORE_DATABASE_URL"
        )
    as_user: list[str] = []
    if os.geteuid() == 0:
        pwd.getpwnam("postgres")  # Debian's package makes this user
        as_user = ["runuser", "-u", "postgres", "--"]
    PRIVATE_DIR.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(PRIVATE_DIR, "postgres", "postgres")
    data = PRIVATE_DIR.resolve()
    if not (data / "PG_VERSION").exists():
        subprocess.run(
            [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
             "--auth=trust", "-E", "UTF8"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    subprocess.run(
        [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"),
         "-w", "-o", f"-p {PRIVATE_PORT} -k {data} -c listen_addresses=127.0.0.1", "start"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    print(
        f"started a private PostgreSQL on 127.0.0.1:{PRIVATE_PORT} in {PRIVATE_DIR}",
        file=sys.stderr,
    )
    return f"postgresql://postgres@127.0.0.1:{PRIVATE_PORT}/postgres"


async def prepare() -> str:
    """The URL of the archive's database, created and migrated."""
    server = await _server_url()
    if server is None:
        if os.environ.get("RISKSCORE_DATABASE_URL"):
            raise SystemExit("RISKSCORE_DATABASE_URL does not answer")
        server = _start_private()
    given = os.environ.get("RISKSCORE_DATABASE_URL")
    url = given or _with_database(server, DATABASE)
    if not given:
        admin = await asyncpg.connect(server)
        try:
            if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
                await admin.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await admin.close()
    connection = await asyncpg.connect(url)
    try:
        await apply_migrations(connection)
        import datetime as dt

        await maintain_partitions(
            connection, today=dt.datetime.now(dt.UTC).date(), retention_days=400
        )
    finally:
        await connection.close()
    return url


def main() -> None:
    """Print the archive's URL (the last line), or say why there is none (exit 2)."""
    try:
        print(asyncio.run(prepare()))
    except SystemExit as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
