"""The third-party files the service's pages load: fetched from npm, pinned, checked.

``service/api/assets/sources.json`` is the one place their versions are pinned: for each
npm package its version, the registry's integrity (SHA-512 of the tarball), its licence,
and which of its files are shipped where; the patches made to them (each an exact string
replaced, with why: a file that would still reach for the internet); then the SHA-256 of
every shipped file.
``update`` runs ``npm pack`` for each pinned version (optionally moving some to new
versions first), refuses a tarball whose integrity differs from the pin of the same
version, copies the listed files, applies the patches (each must match exactly once, so a new
version that moved the string is noticed) and rewrites the pins; ``check`` tells whether the shipped
files are still those the pins name. The files are committed, so serving, CI and a closed
network never need npm.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.api.schema_pages import ASSETS_DIR, SOURCES_FILE
from service.errors import RiskscoreError


class AssetError(RiskscoreError, ValueError):
    """An asset could not be fetched, or a shipped file is not the pinned one."""


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file, as ``sources.json`` pins it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_sources(path: Path = SOURCES_FILE) -> dict[str, Any]:
    """The pin file."""
    return json.loads(path.read_text(encoding="utf-8"))


def check(sources_file: Path = SOURCES_FILE, assets_dir: Path = ASSETS_DIR) -> list[str]:
    """Every shipped file that is missing or differs from its pinned SHA-256.

    Empty when the files are exactly those ``sources.json`` names.
    """
    sources = load_sources(sources_file)
    problems = []
    shipped = {dst for pin in sources["packages"].values() for dst in pin["files"].values()}
    shipped |= set(sources["own"])
    if missing_pin := sorted(shipped - set(sources["sha256"])):
        problems.append(f"no SHA-256 pinned for {', '.join(missing_pin)}")
    for name, digest in sorted(sources["sha256"].items()):
        path = assets_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_of(path) != digest:
            problems.append(f"{name}: differs from the pinned file (run `riskscore assets update`)")
    return problems


def _npm_pack(spec: str, into: Path, npm: str) -> dict[str, Any]:
    try:
        done = subprocess.run(
            [npm, "pack", spec, "--json", "--pack-destination", str(into)],
            cwd=into,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AssetError(f"npm pack {spec}: {exc}") from None
    if done.returncode != 0:
        raise AssetError(f"npm pack {spec} failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)[0]


def update(
    bump: Mapping[str, str] | None = None,
    *,
    sources_file: Path = SOURCES_FILE,
    assets_dir: Path = ASSETS_DIR,
    npm: str = "npm",
) -> list[str]:
    """Fetch every pinned package, ship the files its pin lists, and rewrite the pins.

    Packages in ``bump`` move to the version given there first. Returns one line per package.
    """
    sources = load_sources(sources_file)
    packages: dict[str, Any] = sources["packages"]
    bump = dict(bump or {})
    if unknown := sorted(set(bump) - set(packages)):
        raise AssetError(f"not a pinned package: {', '.join(unknown)}")
    done = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, pin in packages.items():
            version = bump.get(name, pin["version"])
            info = _npm_pack(f"{name}@{version}", Path(tmp), npm)
            if info.get("version") != version:
                raise AssetError(f"{name}@{version}: npm packed {info.get('version')}")
            if version == pin["version"] and pin.get("integrity") not in (None, info["integrity"]):
                raise AssetError(
                    f"{name}@{version}: the registry's tarball is not the pinned one "
                    f"({info['integrity'][:24]}… against {pin['integrity'][:24]}…)"
                )
            with tarfile.open(Path(tmp) / info["filename"]) as tar:
                manifest = json.load(tar.extractfile("package/package.json"))  # type: ignore[arg-type]
                for src, dst in pin["files"].items():
                    member = tar.extractfile(f"package/{src}")
                    if member is None:
                        raise AssetError(f"{name}@{version}: {src} is not a file")
                    target = assets_dir / dst
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with target.open("wb") as out:
                        shutil.copyfileobj(member, out)
            was = pin["version"]
            packages[name] = {
                "version": version,
                "license": manifest["license"],
                "integrity": info["integrity"],
                "files": pin["files"],
            }
            done.append(f"{name} {version}" + (f" (was {was})" if was != version else ""))
    for patch in sources.get("patches", []):
        target = assets_dir / patch["file"]
        text = target.read_text(encoding="utf-8")
        if (found := text.count(patch["find"])) != 1:
            raise AssetError(f"patch of {patch['file']}: {patch['find']!r} found {found} times")
        target.write_text(text.replace(patch["find"], patch["replace"]), encoding="utf-8")
    sources["packages"] = packages
    shipped = [dst for pin in packages.values() for dst in pin["files"].values()]
    sources["sha256"] = {f: sha256_of(assets_dir / f) for f in sorted([*shipped, *sources["own"]])}
    sources_file.write_text(json.dumps(sources, indent=2) + "\n", encoding="utf-8")
    return done
